//! The transport under the engine: the user's IO, wrapped (with the `tls`
//! or `rustls` feature) in the switchable TLS transport, so any handle can
//! STARTTLS.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};

/// What the engine needs from its transport: bytes in and out with the
/// crate's typed [`Error`] (a TLS failure arrives as the TLS error it is,
/// never inside an `io::Error`), and the TLS switches.
pub(crate) trait Transport: Unpin {
    /// Reads into `buf`; nothing read is end of input.
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<Result<()>>;

    /// Writes from `bufs` (all of them when the transport writes vectored,
    /// else the first non-empty one). One buffer is a plain write.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize>>;

    /// Whether [`poll_send`](Self::poll_send) takes more than one buffer.
    fn is_send_vectored(&self) -> bool;

    /// Flushes what was written.
    fn poll_send_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>>;

    /// Shuts the write side down (over TLS after close_notify).
    fn poll_send_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>>;

    /// Begins a TLS handshake with `replay` as the first ciphertext.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn start_tls(&mut self, mode: crate::tls::TlsMode, replay: Bytes) -> Result<()>;

    /// Drives a handshake in progress; `Ready(Ok)` when there is none.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>>;

    /// Sends close_notify and goes back to plaintext.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn poll_stop_tls(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>>;

    /// The peer's certificate (DER) once TLS is up, if it sent one.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn peer_certificate(&self) -> Option<Vec<u8>>;

    /// How many reads and writes of the IO underneath moved bytes so far,
    /// including those a TLS library made itself (without TLS, the engine
    /// sees every one itself, and this stays zero).
    fn activity(&self) -> Activity;
}

/// Counts of the IO's reads and writes that moved at least one byte,
/// wrapping: they are only compared before and after one call into the
/// transport, which makes far fewer than 65,536 of them. (Two bytes each
/// keep an idle spawned connection's task in a smaller allocation.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Activity {
    pub(crate) reads: u16,
    pub(crate) writes: u16,
}

/// The user's IO, counting its reads and writes that move bytes: the TLS
/// library reads and writes it directly during a handshake or a
/// close_notify, out of the engine's sight, and the timers must still see
/// that traffic ([TO-1](crate::semantics#TO-1)).
#[cfg(any(feature = "tls", feature = "rustls"))]
#[derive(Debug)]
pub(crate) struct Counted<IO> {
    io: IO,
    moved: Activity,
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.moved.reads = this.moved.reads.wrapping_add(1);
        }
        polled
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.count_write(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.count_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl<IO> Counted<IO> {
    fn count_write(&mut self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.moved.writes = self.moved.writes.wrapping_add(1);
        }
    }
}

/// Reads once into `buf`'s spare capacity (at most its `remaining_mut`),
/// as `tokio_util::io::poll_read_buf` does, keeping the transport's typed
/// error. `Ok(0)` is end of input.
pub(crate) fn poll_read_buf<T: Transport, B: BufMut>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut B,
) -> Poll<Result<usize>> {
    /// Presents the transport to tokio-util's helper and keeps the typed
    /// error aside: the `io::Error` it sees is a placeholder never shown.
    struct Reader<'a, T> {
        io: &'a mut T,
        failed: Option<Error>,
    }
    impl<T: Transport> AsyncRead for Reader<'_, T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match std::task::ready!(self.io.poll_recv(cx, buf)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(e) => {
                    self.failed = Some(e);
                    Poll::Ready(Err(std::io::ErrorKind::Other.into()))
                }
            }
        }
    }
    let mut reader = Reader { io, failed: None };
    match std::task::ready!(tokio_util::io::poll_read_buf(
        Pin::new(&mut reader),
        cx,
        buf
    )) {
        Ok(n) => Poll::Ready(Ok(n)),
        Err(e) => Poll::Ready(Err(reader.failed.unwrap_or_else(|| Error::transport(e)))),
    }
}

/// The engine's transport: TLS-capable with the `tls` or `rustls` feature.
#[cfg(any(feature = "tls", feature = "rustls"))]
pub(crate) type TransportIo<IO> = crate::tls::TlsTransport<Counted<IO>>;

/// A failure of a read or write over the TLS-capable transport: the IO's
/// own errors are classified like any transport error (`EPIPE` stays
/// `EPIPE`), TLS failures become what they are (`EPROTO`, truncation).
#[cfg(any(feature = "tls", feature = "rustls"))]
fn tls_io_failed(e: crate::tls::TlsError) -> Error {
    match e.into_io() {
        Ok(io) => Error::transport(io),
        Err(tls) => Error::from(tls),
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl<IO: AsyncRead + AsyncWrite + Unpin> Transport for TransportIo<IO> {
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_recv(self, cx, buf).map_err(tls_io_failed)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize>> {
        self.poll_send_vectored(cx, bufs).map_err(tls_io_failed)
    }

    fn is_send_vectored(&self) -> bool {
        crate::tls::TlsTransport::is_send_vectored(self)
    }

    fn poll_send_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_send_flush(self, cx).map_err(tls_io_failed)
    }

    fn poll_send_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_send_shutdown(self, cx).map_err(tls_io_failed)
    }

    fn start_tls(&mut self, mode: crate::tls::TlsMode, replay: Bytes) -> Result<()> {
        crate::tls::TlsTransport::start_tls(self, mode, replay).map_err(Error::from)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_handshake(self, cx).map_err(Error::from)
    }

    fn poll_stop_tls(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_stop_tls(self, cx).map_err(Error::from)
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        crate::tls::TlsTransport::peer_certificate(self)
    }

    fn activity(&self) -> Activity {
        self.get_ref().map_or_else(Activity::default, |io| io.moved)
    }
}

/// Wraps `io` for the engine.
pub(crate) fn wrap<IO: AsyncRead + AsyncWrite + Unpin>(io: IO) -> TransportIo<IO> {
    #[cfg(any(feature = "tls", feature = "rustls"))]
    {
        TransportIo::new(Counted {
            io,
            moved: Activity::default(),
        })
    }
    #[cfg(not(any(feature = "tls", feature = "rustls")))]
    {
        TransportIo::new(io)
    }
}

/// The user's IO back, with bytes the transport read but never delivered.
pub(crate) fn unwrap<IO: AsyncRead + AsyncWrite + Unpin>(io: TransportIo<IO>) -> (IO, Bytes) {
    #[cfg(any(feature = "tls", feature = "rustls"))]
    {
        let (counted, unread) = io.into_inner();
        (counted.io, unread)
    }
    #[cfg(not(any(feature = "tls", feature = "rustls")))]
    {
        io.into_inner()
    }
}

/// The user's IO, for socket options and addresses.
pub(crate) fn get_ref<IO: AsyncRead + AsyncWrite + Unpin>(io: &TransportIo<IO>) -> &IO {
    #[cfg(any(feature = "tls", feature = "rustls"))]
    {
        // `None` only if the TLS library panicked inside a call and lost the
        // IO; that panic already reached the caller then.
        &io.get_ref()
            .expect("the TLS transport lost its IO in an earlier panic")
            .io
    }
    #[cfg(not(any(feature = "tls", feature = "rustls")))]
    {
        &io.0
    }
}

/// Without TLS the transport is the IO itself.
#[cfg(not(any(feature = "tls", feature = "rustls")))]
#[derive(Debug)]
pub(crate) struct TransportIo<IO>(IO);

#[cfg(not(any(feature = "tls", feature = "rustls")))]
impl<IO> TransportIo<IO> {
    fn new(io: IO) -> TransportIo<IO> {
        TransportIo(io)
    }

    fn into_inner(self) -> (IO, Bytes) {
        (self.0, Bytes::new())
    }
}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
impl<IO: AsyncRead + AsyncWrite + Unpin> Transport for TransportIo<IO> {
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0)
            .poll_read(cx, buf)
            .map_err(Error::transport)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<Result<usize>> {
        let io = Pin::new(&mut self.0);
        match bufs {
            [one] => io.poll_write(cx, one),
            _ => io.poll_write_vectored(cx, bufs),
        }
        .map_err(Error::transport)
    }

    fn is_send_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_send_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0)
            .poll_flush(cx)
            .map_err(Error::transport)
    }

    fn poll_send_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0)
            .poll_shutdown(cx)
            .map_err(Error::transport)
    }

    fn activity(&self) -> Activity {
        Activity::default()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use bytes::BytesMut;

    use super::*;
    use crate::error::ErrorKind;

    /// A transport whose reads fail with one typed error.
    struct Failing(Option<Error>);

    impl Transport for Failing {
        fn poll_recv(&mut self, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<Result<()>> {
            Poll::Ready(Err(self.0.take().expect("read once")))
        }
        fn poll_send(&mut self, _: &mut Context<'_>, _: &[IoSlice<'_>]) -> Poll<Result<usize>> {
            unreachable!()
        }
        fn is_send_vectored(&self) -> bool {
            false
        }
        fn poll_send_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
            unreachable!()
        }
        fn poll_send_shutdown(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
            unreachable!()
        }
        #[cfg(any(feature = "tls", feature = "rustls"))]
        fn start_tls(&mut self, _: crate::tls::TlsMode, _: Bytes) -> Result<()> {
            unreachable!()
        }
        #[cfg(any(feature = "tls", feature = "rustls"))]
        fn poll_handshake(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
            unreachable!()
        }
        #[cfg(any(feature = "tls", feature = "rustls"))]
        fn poll_stop_tls(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
            unreachable!()
        }
        #[cfg(any(feature = "tls", feature = "rustls"))]
        fn peer_certificate(&self) -> Option<Vec<u8>> {
            None
        }
        fn activity(&self) -> Activity {
            Activity::default()
        }
    }

    #[tokio::test]
    async fn a_typed_read_error_reaches_the_engine_as_it_was_raised() {
        let raised = Error::timed_out("from the transport");
        let mut io = Failing(Some(raised));
        let mut buf = BytesMut::with_capacity(64);
        let e = poll_fn(|cx| poll_read_buf(&mut io, cx, &mut buf))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(
            !e.is_fatal(),
            "kept as raised, not remade from an io::Error"
        );
        assert!(buf.is_empty());
    }

    #[cfg(any(feature = "tls", feature = "rustls"))]
    #[tokio::test]
    async fn tls_failures_are_typed_and_io_failures_under_tls_keep_their_kind() {
        use crate::tls::TlsError;
        let mut io = Failing(Some(tls_io_failed(TlsError::truncated())));
        let mut buf = BytesMut::with_capacity(64);
        let e = poll_fn(|cx| poll_read_buf(&mut io, cx, &mut buf))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.tls_error().is_some_and(TlsError::is_truncated), "{e:?}");
        assert!(e.io_error().is_none(), "{e:?}");

        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "peer gone");
        let e = tls_io_failed(TlsError::io(pipe));
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
        assert!(e.io_error().is_some() && e.tls_error().is_none(), "{e:?}");
    }

    #[cfg(any(feature = "tls", feature = "rustls"))]
    #[tokio::test]
    async fn a_broken_pipe_under_the_tls_transport_is_epipe() {
        /// Reads fail with `BrokenPipe`.
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut io = wrap(Broken);
        let mut buf = BytesMut::with_capacity(64);
        let e = poll_fn(|cx| poll_read_buf(&mut io, cx, &mut buf))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e:?}");
        let e = poll_fn(|cx| io.poll_send(cx, &[IoSlice::new(b"x")]))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e:?}");
    }
}
