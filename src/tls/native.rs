//! The native-tls backend: an async adapter over the synchronous
//! [`native_tls::TlsStream`].
//!
//! `tokio_native_tls::TlsStream` owns its IO for good (it has no
//! `into_inner`), which rules out stoptls and `into_parts` over TLS. Here
//! the stream's `S` is a [`Shim`]: a blocking-style `Read + Write` view of
//! the async IO that
//!
//! * owns the IO in an `Option`, so the IO can be taken back out of a live
//!   session (`get_mut().io.take()`) and the session dropped;
//! * keeps the [`Waker`] of the poll in progress (a clone, refreshed on each
//!   poll and cloned only when it changes), builds a [`Context`] from it for
//!   each read or write, and maps `Poll::Pending` to `WouldBlock`, which the
//!   TLS library passes back up as "want read/write". No `unsafe`: a stable
//!   `Context` carries nothing but its waker, so a stored waker is all the
//!   IO needs (tokio's coop budget is thread-local, not in the `Context`);
//! * serves a **replay** prefix first (see
//!   [`TlsTransport::start_tls`](super::TlsTransport::start_tls));
//! * records whether the IO reached EOF, which tells a truncated stream from
//!   a clean close_notify.
//!
//! The library reads a record header and then exactly the record, so the
//! bytes after the peer's close_notify stay in the IO for plaintext.

use std::io::{self, Read, Write};
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use native_tls::{HandshakeError, MidHandshakeTlsStream, TlsAcceptor, TlsConnector, TlsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TlsError;
use super::transport::Step;

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
    /// The waker of the poll in progress; every `poll_*` refreshes it
    /// before it calls into the TLS library.
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

    fn take_parts(&mut self) -> Option<(IO, Bytes)> {
        let io = self.io.take()?;
        Some((io, mem::take(&mut self.replay)))
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

/// Which side starts the handshake, with its context.
pub(super) enum Side {
    Connect(TlsConnector, String),
    Accept(TlsAcceptor),
}

/// A native-tls handshake in progress.
pub(super) struct Handshake<IO> {
    phase: Phase<IO>,
    lifeboat: Lifeboat<IO>,
}

enum Phase<IO> {
    /// `start_tls` was called; the first poll starts the handshake (the TLS
    /// library does I/O as soon as it is given the stream).
    Start { side: Side, shim: Shim<IO> },
    /// The handshake is waiting for the IO.
    Mid(MidHandshakeTlsStream<Shim<IO>>),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Handshake<IO> {
    pub(super) fn new(side: Side, io: IO, replay: Bytes) -> Handshake<IO> {
        let lifeboat: Lifeboat<IO> = Arc::new(Mutex::new(None));
        let shim = Shim {
            io: Some(io),
            waker: None,
            replay,
            peer_eof: false,
            io_failed: false,
            lifeboat: Some(Arc::clone(&lifeboat)),
        };
        Handshake {
            phase: Phase::Start { side, shim },
            lifeboat,
        }
    }

    pub(super) fn poll(self, cx: &mut Context<'_>) -> Step<Handshake<IO>, Conn<IO>, IO> {
        let Handshake { phase, lifeboat } = self;
        let result = match phase {
            Phase::Start { side, mut shim } => {
                shim.enter(cx.waker());
                match &side {
                    Side::Connect(connector, domain) => connector.connect(domain, shim),
                    Side::Accept(acceptor) => acceptor.accept(shim),
                }
            }
            Phase::Mid(mut mid) => {
                mid.get_mut().enter(cx.waker());
                mid.handshake()
            }
        };
        match result {
            Ok(mut stream) => {
                stream.get_mut().lifeboat = None;
                Step::Done(Conn {
                    stream,
                    close_notify_sent: false,
                })
            }
            Err(HandshakeError::WouldBlock(mid)) => {
                if mid.get_ref().io_failed {
                    // Defensive: an IO that reports WouldBlock as an error
                    // would otherwise hang here; native-tls has already
                    // seen it as "want I/O", so poll again.
                    cx.waker().wake_by_ref();
                }
                Step::Pending(Handshake {
                    phase: Phase::Mid(mid),
                    lifeboat,
                })
            }
            Err(HandshakeError::Failure(e)) => {
                let rescued = lifeboat
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let peer_eof = rescued.as_ref().is_some_and(|r| r.peer_eof);
                Step::Failed(
                    TlsError::handshake(e, peer_eof),
                    rescued.map(|r| (r.io, r.replay)),
                )
            }
        }
    }

    fn shim(&self) -> &Shim<IO> {
        match &self.phase {
            Phase::Start { shim, .. } => shim,
            Phase::Mid(mid) => mid.get_ref(),
        }
    }

    fn shim_mut(&mut self) -> &mut Shim<IO> {
        match &mut self.phase {
            Phase::Start { shim, .. } => shim,
            Phase::Mid(mid) => mid.get_mut(),
        }
    }

    pub(super) fn io_ref(&self) -> Option<&IO> {
        self.shim().io.as_ref()
    }

    pub(super) fn io_mut(&mut self) -> Option<&mut IO> {
        self.shim_mut().io.as_mut()
    }

    pub(super) fn into_parts(mut self) -> Option<(IO, Bytes)> {
        self.shim_mut().take_parts()
    }
}

/// An established native-tls session.
pub(super) struct Conn<IO> {
    stream: TlsStream<Shim<IO>>,
    /// Our close_notify has been handed to the IO (flushing may be pending).
    close_notify_sent: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Classifies an error the TLS library returned from a read or write.
    fn error(&self, e: io::Error) -> TlsError {
        let shim = self.stream.get_ref();
        if shim.io_failed {
            TlsError::io(e)
        } else if shim.peer_eof {
            TlsError::truncated()
        } else {
            TlsError::protocol(e)
        }
    }

    /// Reads application data; leaves `buf` unchanged on a clean TLS EOF.
    /// `buf` has room.
    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), TlsError>> {
        self.stream.get_mut().enter(cx.waker());
        let want = buf.remaining().min(MAX_TLS_READ);
        match self.stream.read(buf.initialize_unfilled_to(want)) {
            // The library may call a bare TCP EOF a clean end; the IO
            // knows better.
            Ok(0) if self.stream.get_ref().peer_eof => Poll::Ready(Err(TlsError::truncated())),
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(self.error(e))),
        }
    }

    /// Writes application data; `buf` is not empty.
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, TlsError>> {
        self.stream.get_mut().enter(cx.waker());
        match self.stream.write(buf) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(self.error(e))),
        }
    }

    /// Flushes the IO. The TLS library keeps no write buffer of its own:
    /// every record is handed to the shim as soon as it is sealed.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        match self.stream.get_mut().io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx).map_err(TlsError::io),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends our close_notify (once) and flushes it out.
    pub(super) fn poll_close_notify(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        if !self.close_notify_sent {
            self.stream.get_mut().enter(cx.waker());
            // Called again only while the alert is still being written; once
            // it succeeds we never call it again, because a further call
            // would start reading, waiting for the peer's close_notify.
            match self.stream.shutdown() {
                Ok(()) => self.close_notify_sent = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(self.error(e))),
            }
        }
        self.poll_flush(cx)
    }

    /// The peer's certificate as DER, if it sent one.
    pub(super) fn peer_certificate(&self) -> Option<Vec<u8>> {
        let cert = self.stream.peer_certificate().ok().flatten()?;
        cert.to_der().ok()
    }

    pub(super) fn io_ref(&self) -> Option<&IO> {
        self.stream.get_ref().io.as_ref()
    }

    pub(super) fn io_mut(&mut self) -> Option<&mut IO> {
        self.stream.get_mut().io.as_mut()
    }

    /// Takes the IO and the unread replay bytes out, ending the session
    /// without a word to the peer.
    pub(super) fn into_parts(mut self) -> Option<(IO, Bytes)> {
        self.stream.get_mut().take_parts()
    }
}
