//! [`TlsError`]: what went wrong with TLS on a connection.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::io;

/// The class of a [`TlsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// Building a client or server context failed (an identity the TLS
    /// library refused, say). No connection was involved.
    Config,
    /// The handshake failed: certificate verification, a host-name
    /// mismatch, no common protocol version or cipher, a peer that does not
    /// speak TLS, or the peer closing the connection half-way. Fatal: the
    /// connection never goes on unencrypted.
    Handshake,
    /// A TLS protocol error after the handshake (a bad record MAC, an
    /// unexpected message, a fatal alert from the peer). Fatal.
    Protocol,
    /// The connection ended (TCP EOF) without the peer's close_notify, so
    /// an attacker could have cut the data short. Fatal.
    Truncated,
    /// TLS could not start because the connection is not in plaintext: TLS
    /// is active or its handshake is running, or TLS is still stopping
    /// (after a stoptls our close_notify was sent, but the peer's has not
    /// been read yet, so the old session still decrypts what the peer
    /// sends). The TLS state is unchanged.
    ///
    /// [`QueuedFramed::starttls`](crate::QueuedFramed::starttls) and
    /// [`Handle::starttls`](crate::Handle::starttls) refuse a STARTTLS while
    /// TLS is active or a switch is queued before it gets here (a non-fatal
    /// `EINVAL` of their own). This kind reaches them when a STARTTLS finds
    /// TLS still stopping when its turn comes: that is a fatal `EINVAL`
    /// ([`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)) that
    /// closes the connection, since the output queued behind the STARTTLS
    /// was meant for TLS and must not leave in plaintext.
    AlreadyTls,
    /// The underlying connection failed (reset, broken pipe, ...); the
    /// original [`io::Error`] is the [`source`](StdError::source).
    Io,
}

/// A TLS failure on a connection, or while building a TLS context.
///
/// Shaped like [`io::Error`]: a [`kind`](TlsError::kind), a message that
/// carries the TLS library's own reason (for example
/// `certificate verify failed ... (Hostname mismatch)`), and the underlying
/// error as the [`source`](StdError::source).
///
/// # Examples
///
/// ```
/// use anyframe::tls::{TlsError, TlsErrorKind};
///
/// fn report(e: &TlsError) -> String {
///     match e.kind() {
///         TlsErrorKind::Handshake => format!("no TLS session: {e}"),
///         TlsErrorKind::Truncated => "the peer's data may be cut short".to_owned(),
///         _ => e.to_string(),
///     }
/// }
/// # let _ = report;
/// ```
pub struct TlsError {
    inner: Box<Inner>,
}

struct Inner {
    kind: TlsErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl TlsError {
    fn new(kind: TlsErrorKind, message: impl Into<Cow<'static, str>>) -> TlsError {
        TlsError {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
            }),
        }
    }

    fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> TlsError {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// A context could not be built from the given settings.
    pub(crate) fn config(e: impl StdError + Send + Sync + 'static) -> TlsError {
        TlsError::new(TlsErrorKind::Config, "cannot build the TLS context").with_source(e)
    }

    /// The handshake failed with `e`. `peer_eof` says whether the peer had
    /// closed the connection by then. An I/O failure underneath the TLS
    /// library is reported as [`TlsErrorKind::Io`] with the original error.
    #[cfg(feature = "tls")]
    pub(crate) fn handshake(e: native_tls::Error, peer_eof: bool) -> TlsError {
        if let Some(io) = find_io_error(&e) {
            // native-tls keeps the error; a copy keeps the OS's code.
            let io = match io.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(io.kind(), io.to_string()),
            };
            return TlsError::handshake_io(io);
        }
        TlsError::handshake_failed(e, peer_eof)
    }

    /// The handshake was refused (by us or the peer) with `e`; `peer_eof`
    /// as for [`TlsError::handshake`].
    pub(crate) fn handshake_failed(
        e: impl StdError + Send + Sync + 'static,
        peer_eof: bool,
    ) -> TlsError {
        let message = if peer_eof {
            "TLS handshake failed: the peer closed the connection"
        } else {
            "TLS handshake failed"
        };
        TlsError::new(TlsErrorKind::Handshake, message).with_source(e)
    }

    /// The peer closed the connection before the handshake was done.
    #[cfg(feature = "rustls")]
    pub(crate) fn handshake_eof() -> TlsError {
        TlsError::new(
            TlsErrorKind::Handshake,
            "TLS handshake failed: the peer closed the connection",
        )
    }

    /// An empty domain for a native-tls client: OpenSSL takes an empty
    /// host name as "check none", so it is refused rather than passed on.
    #[cfg(feature = "tls")]
    pub(crate) fn empty_domain() -> TlsError {
        TlsError::new(
            TlsErrorKind::Config,
            "an empty domain names no host to check the certificate against",
        )
    }

    /// A domain with a NUL byte for a native-tls client: it names no host,
    /// and OpenSSL's host name call cannot take it.
    #[cfg(feature = "tls")]
    pub(crate) fn nul_in_domain() -> TlsError {
        TlsError::new(
            TlsErrorKind::Config,
            "a domain with a NUL byte names no host",
        )
    }

    /// The `io::Error` under a failure of the IO ([`TlsErrorKind::Io`]).
    pub(crate) fn io_source(&self) -> Option<&io::Error> {
        if self.inner.kind != TlsErrorKind::Io {
            return None;
        }
        self.inner.source.as_deref()?.downcast_ref::<io::Error>()
    }

    /// The IO failed during the handshake.
    pub(crate) fn handshake_io(e: io::Error) -> TlsError {
        TlsError::new(TlsErrorKind::Io, "I/O error during the TLS handshake").with_source(e)
    }

    /// Used for every call after a handshake failure.
    pub(crate) fn failed_earlier() -> TlsError {
        TlsError::new(
            TlsErrorKind::Handshake,
            "the TLS handshake failed earlier; the connection is unusable",
        )
    }

    /// A TLS error after the handshake, as the TLS library reported it.
    pub(crate) fn protocol(e: impl StdError + Send + Sync + 'static) -> TlsError {
        TlsError::new(TlsErrorKind::Protocol, "TLS protocol error").with_source(e)
    }

    /// The IO itself failed; converting back to `io::Error` gives `e`.
    pub(crate) fn io(e: io::Error) -> TlsError {
        TlsError::new(TlsErrorKind::Io, "I/O error").with_source(e)
    }

    /// TCP EOF without close_notify.
    pub(crate) fn truncated() -> TlsError {
        TlsError::new(
            TlsErrorKind::Truncated,
            "TLS stream truncated: the connection ended without close_notify",
        )
    }

    /// `start_tls` on a transport that is not plaintext.
    pub(crate) fn already_tls() -> TlsError {
        TlsError::new(TlsErrorKind::AlreadyTls, "TLS is already active")
    }

    /// `start_tls` after our close_notify, before the peer's has been read:
    /// the old session still decrypts what the peer sends.
    pub(crate) fn still_stopping() -> TlsError {
        TlsError::new(
            TlsErrorKind::AlreadyTls,
            "TLS is still stopping: the peer's close_notify has not been read",
        )
    }

    /// The transport was left in an unusable state by a panic inside the
    /// TLS library.
    pub(crate) fn poisoned() -> TlsError {
        TlsError::new(
            TlsErrorKind::Protocol,
            "the TLS state was lost (an earlier call panicked)",
        )
    }

    /// The errno-like class of this error.
    pub fn kind(&self) -> TlsErrorKind {
        self.inner.kind
    }

    /// True when the handshake failed (including certificate and host-name
    /// verification).
    pub fn is_handshake(&self) -> bool {
        self.inner.kind == TlsErrorKind::Handshake
    }

    /// True when the connection ended without the peer's close_notify.
    pub fn is_truncated(&self) -> bool {
        self.inner.kind == TlsErrorKind::Truncated
    }

    /// Whether the connection is unusable after this error. Everything but
    /// [`TlsErrorKind::AlreadyTls`] (a misuse that changed nothing) and
    /// [`TlsErrorKind::Config`] (no connection involved) is fatal.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self.inner.kind,
            TlsErrorKind::AlreadyTls | TlsErrorKind::Config
        )
    }

    /// The `io::Error` this wraps, when the IO underneath failed (kind
    /// [`TlsErrorKind::Io`]); otherwise the error itself back.
    pub(crate) fn into_io(mut self) -> Result<io::Error, TlsError> {
        if self.inner.kind != TlsErrorKind::Io {
            return Err(self);
        }
        match self.inner.source.take().map(|s| s.downcast::<io::Error>()) {
            Some(Ok(io)) => Ok(*io),
            Some(Err(other)) => {
                self.inner.source = Some(other);
                Err(self)
            }
            None => Err(self),
        }
    }

    /// The [`TlsError`] inside an [`io::Error`] returned by the transport's
    /// `AsyncRead`/`AsyncWrite` methods, if there is one.
    #[cfg_attr(not(test), allow(dead_code, reason = "for the QueuedFramed engine"))]
    pub(crate) fn from_io_ref(e: &io::Error) -> Option<&TlsError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<TlsError>())
    }
}

/// The first [`io::Error`] in `e`'s source chain, if the TLS library failed
/// because the connection did.
#[cfg(feature = "tls")]
fn find_io_error(e: &native_tls::Error) -> Option<&io::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

impl fmt::Debug for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsError");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(s) = &self.inner.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl StdError for TlsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

impl From<TlsError> for io::Error {
    /// [`TlsErrorKind::Io`] gives back the original error; the others keep
    /// the [`TlsError`] inside, with `InvalidData` (handshake, protocol),
    /// `UnexpectedEof` (truncation) or `InvalidInput` (misuse, config).
    fn from(e: TlsError) -> io::Error {
        let kind = match e.inner.kind {
            TlsErrorKind::Handshake | TlsErrorKind::Protocol => io::ErrorKind::InvalidData,
            TlsErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
            TlsErrorKind::AlreadyTls | TlsErrorKind::Config => io::ErrorKind::InvalidInput,
            TlsErrorKind::Io => return e.into_io().unwrap_or_else(io::Error::other),
        };
        io::Error::new(kind, e)
    }
}
