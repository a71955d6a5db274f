//! The transport under the engine: the user's IO, wrapped (with the `tls`
//! or `rustls` feature) in the switchable TLS transport, so any handle can
//! STARTTLS.

#[cfg(not(any(feature = "tls", feature = "rustls")))]
use std::pin::Pin;
#[cfg(any(feature = "tls", feature = "rustls"))]
use std::task::{Context, Poll};
#[cfg(not(any(feature = "tls", feature = "rustls")))]
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(any(feature = "tls", feature = "rustls"))]
use crate::error::Result;

/// What the core needs from its transport besides bytes in and out.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {
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
}

/// The engine's transport: TLS-capable with the `tls` or `rustls` feature.
#[cfg(any(feature = "tls", feature = "rustls"))]
pub(crate) type TransportIo<IO> = crate::tls::TlsTransport<IO>;

#[cfg(any(feature = "tls", feature = "rustls"))]
impl<IO: AsyncRead + AsyncWrite + Unpin> Transport for crate::tls::TlsTransport<IO> {
    fn start_tls(&mut self, mode: crate::tls::TlsMode, replay: Bytes) -> Result<()> {
        crate::tls::TlsTransport::start_tls(self, mode, replay).map_err(crate::Error::from)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_handshake(self, cx).map_err(crate::Error::from)
    }

    fn poll_stop_tls(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        crate::tls::TlsTransport::poll_stop_tls(self, cx).map_err(crate::Error::from)
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        crate::tls::TlsTransport::peer_certificate(self)
    }
}

/// Wraps `io` for the engine.
pub(crate) fn wrap<IO: AsyncRead + AsyncWrite + Unpin>(io: IO) -> TransportIo<IO> {
    TransportIo::new(io)
}

/// The user's IO back, with bytes the transport read but never delivered.
pub(crate) fn unwrap<IO: AsyncRead + AsyncWrite + Unpin>(io: TransportIo<IO>) -> (IO, Bytes) {
    io.into_inner()
}

/// The user's IO, for socket options and addresses.
pub(crate) fn get_ref<IO: AsyncRead + AsyncWrite + Unpin>(io: &TransportIo<IO>) -> &IO {
    #[cfg(any(feature = "tls", feature = "rustls"))]
    {
        // `None` only if the TLS library panicked inside a call and lost the
        // IO; that panic already reached the caller then.
        io.get_ref()
            .expect("the TLS transport lost its IO in an earlier panic")
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
impl<IO: AsyncRead + AsyncWrite + Unpin> Transport for TransportIo<IO> {}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
impl<IO: AsyncRead + Unpin> AsyncRead for TransportIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
impl<IO: AsyncWrite + Unpin> AsyncWrite for TransportIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
