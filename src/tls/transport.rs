//! [`TlsTransport`]: a connection that can switch between plaintext and TLS
//! while it is live, and give its IO back afterwards.
//!
//! The state machine here is shared; the TLS session itself is a backend:
//! native-tls ([`super::native`], feature `tls`) or rustls
//! ([`super::rustls`](super::with_rustls), feature `rustls`). [`TlsMode`]'s
//! settings say which one a handshake uses. Each backend offers the same
//! few operations (drive the handshake; read, write, flush; send
//! close_notify; give the IO back), and [`Handshake`] and [`Conn`] pick the
//! backend with one `match` per call.
//!
//! Both backends
//!
//! * serve a **replay** prefix first: bytes the caller had already read
//!   from the socket before `start_tls` (the ClientHello of a STARTTLS
//!   client, or everything `tls_autostart` inspected). They go to the TLS
//!   library as ciphertext and are never delivered as plaintext;
//! * record whether the IO reached EOF, which tells a truncated stream from
//!   a clean close_notify;
//! * leave the bytes that follow the peer's close_notify unread by the TLS
//!   library, so stoptls goes on in plaintext without losing any.
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
use std::io;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::config::{ClientBackend, ServerBackend};
#[cfg(feature = "tls")]
use super::native;
#[cfg(feature = "rustls")]
use super::with_rustls;
use super::{TlsBackend, TlsError, TlsMode};

/// What one poll of a backend's handshake gives back: the handshake to poll
/// again, the established session, or the error and the IO (with the bytes
/// read but unused) if the backend still had it.
pub(super) enum Step<H, C, IO> {
    Pending(H),
    Done(C),
    Failed(TlsError, Option<(IO, Bytes)>),
}

/// A handshake in progress, on one of the backends.
enum Handshake<IO> {
    #[cfg(feature = "tls")]
    Native(native::Handshake<IO>),
    #[cfg(feature = "rustls")]
    Rustls(with_rustls::Handshake<IO>),
}

/// An established session, on one of the backends.
enum Conn<IO> {
    #[cfg(feature = "tls")]
    Native(native::Conn<IO>),
    #[cfg(feature = "rustls")]
    Rustls(with_rustls::Conn<IO>),
}

/// Calls the same method on whichever backend `$conn` holds.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $e:expr) => {
        match $conn {
            #[cfg(feature = "tls")]
            Conn::Native($c) => $e,
            #[cfg(feature = "rustls")]
            Conn::Rustls($c) => $e,
        }
    };
}

/// A backend ready to start, built from a [`TlsMode`] before the IO is
/// taken, so that a refused configuration leaves the transport as it was.
enum Starter {
    #[cfg(feature = "tls")]
    Native(native::Side),
    #[cfg(feature = "rustls")]
    Rustls(Box<::rustls::Connection>),
}

impl Starter {
    fn new(mode: TlsMode) -> Result<Starter, TlsError> {
        Ok(match mode {
            TlsMode::Connect(c) => match c.backend_parts() {
                #[cfg(feature = "tls")]
                ClientBackend::Native(connector) => {
                    // A client made with `from_connector` is checked here.
                    super::config::refuse_unnamed_host(c.domain())?;
                    Starter::Native(native::Side::Connect(
                        connector.clone(),
                        c.domain().to_owned(),
                    ))
                }
                #[cfg(feature = "rustls")]
                ClientBackend::Rustls { config, name } => {
                    Starter::Rustls(with_rustls::client(config.clone(), name.clone())?)
                }
            },
            TlsMode::Accept(s) => match s.backend_parts() {
                #[cfg(feature = "tls")]
                ServerBackend::Native(acceptor) => {
                    Starter::Native(native::Side::Accept(acceptor.clone()))
                }
                #[cfg(feature = "rustls")]
                ServerBackend::Rustls(config) => {
                    Starter::Rustls(with_rustls::server(config.clone())?)
                }
            },
        })
    }

    fn start<IO: AsyncRead + AsyncWrite + Unpin>(self, io: IO, replay: Bytes) -> Handshake<IO> {
        match self {
            #[cfg(feature = "tls")]
            Starter::Native(side) => Handshake::Native(native::Handshake::new(side, io, replay)),
            #[cfg(feature = "rustls")]
            Starter::Rustls(tls) => Handshake::Rustls(with_rustls::Handshake::new(tls, io, replay)),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Handshake<IO> {
    fn poll(self, cx: &mut Context<'_>) -> Step<Handshake<IO>, Conn<IO>, IO> {
        match self {
            #[cfg(feature = "tls")]
            Handshake::Native(h) => match h.poll(cx) {
                Step::Pending(h) => Step::Pending(Handshake::Native(h)),
                Step::Done(c) => Step::Done(Conn::Native(c)),
                Step::Failed(e, parts) => Step::Failed(e, parts),
            },
            #[cfg(feature = "rustls")]
            Handshake::Rustls(h) => match h.poll(cx) {
                Step::Pending(h) => Step::Pending(Handshake::Rustls(h)),
                Step::Done(c) => Step::Done(Conn::Rustls(c)),
                Step::Failed(e, parts) => Step::Failed(e, parts),
            },
        }
    }

    fn backend(&self) -> TlsBackend {
        match self {
            #[cfg(feature = "tls")]
            Handshake::Native(_) => TlsBackend::NativeTls,
            #[cfg(feature = "rustls")]
            Handshake::Rustls(_) => TlsBackend::Rustls,
        }
    }

    fn io_ref(&self) -> Option<&IO> {
        match self {
            #[cfg(feature = "tls")]
            Handshake::Native(h) => h.io_ref(),
            #[cfg(feature = "rustls")]
            Handshake::Rustls(h) => Some(h.io_ref()),
        }
    }

    fn io_mut(&mut self) -> Option<&mut IO> {
        match self {
            #[cfg(feature = "tls")]
            Handshake::Native(h) => h.io_mut(),
            #[cfg(feature = "rustls")]
            Handshake::Rustls(h) => Some(h.io_mut()),
        }
    }

    fn into_parts(self) -> Option<(IO, Bytes)> {
        match self {
            #[cfg(feature = "tls")]
            Handshake::Native(h) => h.into_parts(),
            #[cfg(feature = "rustls")]
            Handshake::Rustls(h) => Some(h.into_parts()),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    fn io_ref(&self) -> Option<&IO> {
        match self {
            #[cfg(feature = "tls")]
            Conn::Native(c) => c.io_ref(),
            #[cfg(feature = "rustls")]
            Conn::Rustls(c) => Some(c.io_ref()),
        }
    }

    fn io_mut(&mut self) -> Option<&mut IO> {
        match self {
            #[cfg(feature = "tls")]
            Conn::Native(c) => c.io_mut(),
            #[cfg(feature = "rustls")]
            Conn::Rustls(c) => Some(c.io_mut()),
        }
    }

    fn into_parts(self) -> Option<(IO, Bytes)> {
        match self {
            #[cfg(feature = "tls")]
            Conn::Native(c) => c.into_parts(),
            #[cfg(feature = "rustls")]
            Conn::Rustls(c) => Some(c.into_parts()),
        }
    }

    fn backend(&self) -> TlsBackend {
        match self {
            #[cfg(feature = "tls")]
            Conn::Native(_) => TlsBackend::NativeTls,
            #[cfg(feature = "rustls")]
            Conn::Rustls(_) => TlsBackend::Rustls,
        }
    }
}

/// The most [`TlsTransport::into_inner`] reads of a peer's TLS stream
/// after our stoptls while looking for its close_notify.
const SETTLE_MAX: usize = 256 * 1024;

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
    conn: Conn<IO>,
    read_end: ReadEnd,
    /// After the peer's close_notify, go on in plaintext (stoptls) rather
    /// than report EOF (shutdown).
    then_plain: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Session<IO> {
    fn note(&mut self, e: TlsError) -> TlsError {
        if e.is_truncated() {
            self.read_end = ReadEnd::Truncated;
            tracing::debug!("TLS stream truncated: TCP EOF without close_notify");
        }
        e
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
        let before = buf.filled().len();
        match ready!(on_backend!(&mut self.conn, c => c.poll_read(cx, buf))) {
            Ok(()) if buf.filled().len() == before => {
                self.read_end = ReadEnd::CloseNotify;
                tracing::debug!("received the peer's TLS close_notify");
                Poll::Ready(Ok(()))
            }
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.note(e))),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, TlsError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let r = ready!(on_backend!(&mut self.conn, c => c.poll_write(cx, buf)));
        Poll::Ready(r.map_err(|e| self.note(e)))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        on_backend!(&mut self.conn, c => c.poll_flush(cx))
    }

    /// Sends our close_notify (once) and flushes it out.
    fn poll_close_notify(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        let r = ready!(on_backend!(&mut self.conn, c => c.poll_close_notify(cx)));
        Poll::Ready(r.map_err(|e| self.note(e)))
    }
}

enum State<IO> {
    /// Plaintext. `prefix`: bytes left over from a TLS session that the TLS
    /// library never read (they follow its last record), served first.
    Plain {
        io: IO,
        prefix: Bytes,
    },
    Handshaking(Handshake<IO>),
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
/// In plaintext, one `match` per call. Over TLS, one more `match` picks the
/// backend. native-tls: each poll compares the task's waker with the stored
/// one (cloning only when it changed) and makes one call into the TLS
/// library, which reads or writes at most one record (16 KiB) per call.
/// rustls: reads fill our buffer up to two records at a time and hand
/// rustls one record per call; writes seal up to rustls's send-buffer limit
/// (64 KiB by default) per call.
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

    /// Begins a TLS handshake as `mode` says, with the backend its settings
    /// were built for. `replay` holds bytes already read from the IO that
    /// belong to the TLS stream (everything in the read buffer at this
    /// point): the TLS library reads them before it reads the IO, and they
    /// are never returned as plaintext.
    ///
    /// No I/O happens here; the handshake runs in [`poll_handshake`] (or in
    /// the next read or write). Flush pending plaintext before calling this:
    /// a plaintext write after it would be encrypted.
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::AlreadyTls`](super::TlsErrorKind::AlreadyTls) unless
    /// the transport is plaintext (a handshake is running, TLS is active or
    /// still shutting down); [`TlsErrorKind::Config`](super::TlsErrorKind::Config)
    /// if rustls refuses the settings. Nothing changes then. After a failed
    /// handshake, the error that failure reported.
    ///
    /// [`poll_handshake`]: TlsTransport::poll_handshake
    pub(crate) fn start_tls(&mut self, mode: TlsMode, replay: Bytes) -> Result<(), TlsError> {
        match &self.state {
            State::Plain { .. } => {}
            State::Failed(_) => return Err(TlsError::failed_earlier()),
            State::Poisoned => return Err(TlsError::poisoned()),
            State::ShuttingDown(_) => return Err(TlsError::still_stopping()),
            _ => return Err(TlsError::already_tls()),
        }
        let connect = mode.is_connect();
        let starter = Starter::new(mode)?;
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
        tracing::debug!(connect, replay = replay.len(), "starting TLS");
        self.state = State::Handshaking(starter.start(io, replay));
        Ok(())
    }

    /// Drives the handshake. `Ready(Ok(()))` once TLS is established, and at
    /// once when there is no handshake to run (plaintext, or TLS already up).
    ///
    /// # Errors
    ///
    /// A failed handshake ([`TlsError::is_handshake`]; the message carries
    /// the TLS library's reason, such as OpenSSL's `certificate verify
    /// failed` or rustls's `invalid peer certificate: UnknownIssuer`), or
    /// [`TlsErrorKind::Io`] when the IO failed during it. Either is fatal:
    /// the transport stays failed (reads and writes fail, nothing is sent
    /// in plaintext) and only [`into_inner`](TlsTransport::into_inner) is
    /// useful afterwards.
    ///
    /// [`TlsErrorKind::Io`]: super::TlsErrorKind::Io
    pub(crate) fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        match &self.state {
            State::Handshaking(_) => {}
            State::Plain { .. } | State::Tls(_) | State::ShuttingDown(_) => {
                return Poll::Ready(Ok(()));
            }
            State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier())),
            State::Poisoned => return Poll::Ready(Err(TlsError::poisoned())),
        }
        let State::Handshaking(hs) = mem::replace(&mut self.state, State::Poisoned) else {
            return Poll::Ready(Err(TlsError::poisoned()));
        };
        match hs.poll(cx) {
            Step::Pending(hs) => {
                self.state = State::Handshaking(hs);
                Poll::Pending
            }
            Step::Done(conn) => {
                tracing::debug!(backend = ?conn.backend(), "TLS handshake complete");
                self.state = State::Tls(Session {
                    conn,
                    read_end: ReadEnd::Open,
                    then_plain: false,
                });
                Poll::Ready(Ok(()))
            }
            Step::Failed(err, parts) => {
                tracing::debug!(error = %err, "TLS handshake failed");
                self.state = State::Failed(parts);
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
                State::Handshaking(_) => ready!(self.poll_handshake(cx))?,
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
            State::Handshaking(_) | State::Tls(_) | State::ShuttingDown(_)
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

    /// The peer's certificate (the end-entity one, DER-encoded), once TLS
    /// is established and if the peer sent one.
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        match &self.state {
            State::Tls(s) | State::ShuttingDown(s) => {
                on_backend!(&s.conn, c => c.peer_certificate())
            }
            _ => None,
        }
    }

    /// The TLS library in use, from `start_tls` until TLS ends.
    pub(crate) fn backend(&self) -> Option<TlsBackend> {
        match &self.state {
            State::Handshaking(hs) => Some(hs.backend()),
            State::Tls(s) | State::ShuttingDown(s) => Some(s.conn.backend()),
            _ => None,
        }
    }

    /// The IO, for socket options and addresses. `None` only after a panic
    /// inside the TLS library.
    pub(crate) fn get_ref(&self) -> Option<&IO> {
        match &self.state {
            State::Plain { io, .. } => Some(io),
            State::Handshaking(hs) => hs.io_ref(),
            State::Tls(s) | State::ShuttingDown(s) => s.conn.io_ref(),
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
    /// After [`poll_stop_tls`](TlsTransport::poll_stop_tls) (our
    /// close_notify out, the peer's not read yet), what the IO already
    /// holds of the peer's TLS stream is read first, without waiting: its
    /// application data comes back decrypted, and once its close_notify
    /// has been read, the bytes behind it come back as they are. Only if
    /// the peer's close_notify has not arrived yet (or more than
    /// [`SETTLE_MAX`] bytes come before it) is the session dropped as
    /// above, the rest of the peer's TLS stream still in the IO.
    ///
    /// After a failed handshake it returns the IO too.
    ///
    /// # Panics
    ///
    /// Only if an earlier call panicked inside the TLS library and lost the
    /// IO; never because of anything the peer sent.
    pub(crate) fn into_inner(mut self) -> (IO, Bytes) {
        let settled = self.settle_stop();
        let parts = match mem::replace(&mut self.state, State::Poisoned) {
            State::Plain { io, prefix } => Some((io, prefix)),
            State::Handshaking(hs) => hs.into_parts(),
            State::Tls(s) | State::ShuttingDown(s) => s.conn.into_parts(),
            State::Failed(parts) => parts,
            State::Poisoned => None,
        };
        match parts {
            Some((io, rest)) if !settled.is_empty() => {
                let mut all = settled;
                all.extend_from_slice(&rest);
                (io, all.freeze())
            }
            Some(parts) => parts,
            None => panic!("TlsTransport lost its IO after a panic inside the TLS library"),
        }
    }

    /// A stoptls whose read side still waits for the peer's close_notify:
    /// reads, without waiting, what has arrived of the peer's TLS stream
    /// and what follows its close_notify (see
    /// [`into_inner`](TlsTransport::into_inner)). Returns the bytes read;
    /// the transport is plaintext afterwards if the close_notify was among
    /// them.
    fn settle_stop(&mut self) -> BytesMut {
        let mut got = BytesMut::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunk = [0u8; 4096];
        while got.len() < SETTLE_MAX
            && matches!(&self.state, State::ShuttingDown(s) if s.then_plain)
        {
            let mut buf = ReadBuf::new(&mut chunk);
            match self.poll_recv(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    got.extend_from_slice(buf.filled());
                }
                // Plaintext now (the close_notify had nothing behind it),
                // nothing more has arrived, or the session broke: what is
                // left stays in the IO.
                _ => break,
            }
        }
        got
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
            State::ShuttingDown(s) | State::Tls(s) => match s.conn.into_parts() {
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

/// Reads and writes with typed errors: a TLS failure is the [`TlsError`] it
/// is, a failure of the IO underneath is a [`TlsError`] of kind
/// [`Io`](super::TlsErrorKind::Io) around the original `io::Error`. The
/// engine calls these; the `AsyncRead`/`AsyncWrite` impls below wrap them.
impl<IO: AsyncRead + AsyncWrite + Unpin> TlsTransport<IO> {
    /// Reads plaintext: the replayed prefix first in plaintext state, the
    /// decrypted stream over TLS. `Ok` with nothing read is end of input.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), TlsError>> {
        loop {
            match &mut self.state {
                State::Plain { io, prefix } => {
                    if prefix.is_empty() {
                        return Pin::new(io).poll_read(cx, buf).map_err(TlsError::io);
                    }
                    let n = buf.remaining().min(prefix.len());
                    buf.put_slice(&prefix[..n]);
                    prefix.advance(n);
                    if prefix.is_empty() {
                        // Read: its allocation goes now, not with the IO.
                        *prefix = Bytes::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Handshaking(_) => ready!(self.poll_handshake(cx))?,
                State::Tls(s) => return s.poll_read(cx, buf),
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
                    self.detach_to_plain()?;
                }
                State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier())),
                State::Poisoned => return Poll::Ready(Err(TlsError::poisoned())),
            }
        }
    }

    /// Writes plaintext (sealed into records over TLS).
    pub(crate) fn poll_send_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, TlsError>> {
        loop {
            match &mut self.state {
                State::Plain { io, .. } => {
                    return Pin::new(io).poll_write(cx, buf).map_err(TlsError::io);
                }
                State::Handshaking(_) => ready!(self.poll_handshake(cx))?,
                State::Tls(s) => return s.poll_write(cx, buf),
                State::ShuttingDown(s) => {
                    ready!(s.poll_close_notify(cx))?;
                    if !s.then_plain {
                        return Poll::Ready(Err(TlsError::io(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "write after the TLS stream was shut down",
                        ))));
                    }
                    // After our close_notify, plaintext.
                    return match s.conn.io_mut() {
                        Some(io) => Pin::new(io).poll_write(cx, buf).map_err(TlsError::io),
                        None => Poll::Ready(Err(TlsError::poisoned())),
                    };
                }
                State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier())),
                State::Poisoned => return Poll::Ready(Err(TlsError::poisoned())),
            }
        }
    }

    /// Vectored writes in plaintext state; over TLS the first non-empty
    /// buffer (TLS seals one buffer at a time; callers that care coalesce
    /// first).
    pub(crate) fn poll_send_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<Result<usize, TlsError>> {
        if let State::Plain { io, .. } = &mut self.state
            && bufs.len() > 1
        {
            return Pin::new(io)
                .poll_write_vectored(cx, bufs)
                .map_err(TlsError::io);
        }
        let buf = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_send_buf(cx, buf)
    }

    /// Whether [`poll_send_vectored`](Self::poll_send_vectored) writes more
    /// than one buffer at a time.
    pub(crate) fn is_send_vectored(&self) -> bool {
        match &self.state {
            State::Plain { io, .. } => io.is_write_vectored(),
            _ => false,
        }
    }

    /// Flushes the IO (and, over TLS, sealed records not yet written).
    pub(crate) fn poll_send_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        let io = match &mut self.state {
            State::Plain { io, .. } => Some(io),
            State::Handshaking(hs) => hs.io_mut(),
            State::Tls(s) => return s.poll_flush(cx),
            State::ShuttingDown(s) => return s.poll_close_notify(cx),
            State::Failed(_) => return Poll::Ready(Err(TlsError::failed_earlier())),
            State::Poisoned => None,
        };
        match io {
            Some(io) => Pin::new(io).poll_flush(cx).map_err(TlsError::io),
            None => Poll::Ready(Err(TlsError::poisoned())),
        }
    }

    /// Over TLS: sends close_notify (so the peer sees a clean TLS EOF, not a
    /// truncation), flushes, then shuts down the IO's write side. Reads go
    /// on until the peer's close_notify, which reads as EOF. (AnyEvent's
    /// `push_shutdown` sends no close_notify, [TLS-8](crate::semantics#TLS-8); its peers then see a
    /// truncated stream.) During a handshake, it shuts down the IO only.
    pub(crate) fn poll_send_shutdown(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TlsError>> {
        self.begin_close(false);
        let io = match &mut self.state {
            State::Plain { io, .. } => Some(io),
            State::Handshaking(hs) => hs.io_mut(),
            State::ShuttingDown(s) => {
                ready!(s.poll_close_notify(cx))?;
                s.conn.io_mut()
            }
            State::Tls(_) | State::Poisoned => None,
            State::Failed(parts) => parts.as_mut().map(|(io, _)| io),
        };
        match io {
            Some(io) => Pin::new(io).poll_shutdown(cx).map_err(TlsError::io),
            None => Poll::Ready(Err(TlsError::poisoned())),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsTransport<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_recv(cx, buf).map_err(io::Error::from)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsTransport<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_send_buf(cx, buf)
            .map_err(io::Error::from)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_send_vectored(cx, bufs)
            .map_err(io::Error::from)
    }

    fn is_write_vectored(&self) -> bool {
        self.is_send_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_flush(cx).map_err(io::Error::from)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_send_shutdown(cx)
            .map_err(io::Error::from)
    }
}

impl<IO> fmt::Debug for TlsTransport<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Plain { .. } => "Plain",
            State::Handshaking(_) => "Handshaking",
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
