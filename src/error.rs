//! The crate's one error type.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

use anyframe_codecs as codecs;

/// The errno-like class of an [`Error`], as AnyEvent::Handle reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `EPIPE`: the peer closed while a read request could not complete
    /// (the partial frame stays in the read buffer), or a write hit a
    /// closed connection.
    BrokenPipe,
    /// `ETIMEDOUT`: an idle, read or write timeout of a connection expired
    /// ([`Error::timeout`] says which; a transport's own timeout, and a
    /// connect that timed out, are [`Io`](ErrorKind::Io)). Usually
    /// non-fatal; fatal when the timer expires with nobody left to tell and
    /// a response still owed to a pipelined caller, or in the server loop
    /// when the peer stops taking answers. Check [`Error::is_fatal`].
    TimedOut,
    /// `EBADMSG`: the peer sent bytes that are not a valid frame for the
    /// request's decoder. Non-fatal, failing that request only, unless the
    /// decoder says the stream is out of step. One more exception: on a
    /// pipelined response read ([`Handle::call`](crate::Handle::call),
    /// `push_response_with`, the tower client `service::Client`), a
    /// response rejected by a decoder that consumed nothing of it would be
    /// read by the next caller's decoder, so the error is fatal and closes
    /// the connection; the tower server loop `service::serve` likewise
    /// closes the connection (after answering what came before) when its
    /// decoder rejects a request without consuming it.
    BadMessage,
    /// `ENOSPC`: a buffer limit (`rbuf_max`, `wbuf_max`) or a frame limit of a
    /// decoder was crossed.
    NoSpace,
    /// `EPROTO`: TLS handshake or protocol failure. Always fatal: the handle
    /// never continues unencrypted.
    Protocol,
    /// An I/O error from the transport (connection reset, refused, ...),
    /// or the failure of a server loop's service (`service::serve`: an
    /// error from the service's `call` or `poll_ready`). Reported as `EIO`,
    /// fatal. For a transport error the OS's own error is
    /// [`Error::io_error`]. For a service failure there is no I/O error
    /// ([`Error::io_error`] is `None`): the service's error is the
    /// [`source`](std::error::Error::source).
    Io,
    /// The connection is closed (by `destroy` or `detach`, or because its
    /// last handle or its driver task is gone) and the operation cannot
    /// run. After a fatal error, later calls get that error itself, not
    /// this one. Reported as `EBADF`, as for a closed file descriptor.
    Closed,
    /// The caller asked for something that cannot be done (an encoder
    /// refused the item, STARTTLS while TLS is active, ...). Nothing was
    /// queued. Fatal only where it says so: an encoder that removed output
    /// queued before its item, a STARTTLS refused behind a `stoptls`.
    InvalidInput,
    /// A user callback (a completion, a decoder, an encoder or a hook)
    /// panicked while the engine ran it. Always fatal: the connection is
    /// closed, every waiter gets this error, and the panic itself goes on to
    /// the caller that was running the engine (or to whoever awaits the
    /// [`Driver`](crate::Driver)). Reported as `ECANCELED`, the operation
    /// having been abandoned.
    Panicked,
}

impl ErrorKind {
    /// The errno name this kind stands for (`"EPIPE"`, `"ETIMEDOUT"`, ...).
    pub fn errno_name(self) -> &'static str {
        match self {
            ErrorKind::BrokenPipe => "EPIPE",
            ErrorKind::TimedOut => "ETIMEDOUT",
            ErrorKind::BadMessage => "EBADMSG",
            ErrorKind::NoSpace => "ENOSPC",
            ErrorKind::Protocol => "EPROTO",
            ErrorKind::Io => "EIO",
            ErrorKind::Closed => "EBADF",
            ErrorKind::InvalidInput => "EINVAL",
            ErrorKind::Panicked => "ECANCELED",
        }
    }
}

/// The error type of `anyframe`.
///
/// Cheap to clone (one `Arc`): a fatal error is handed to every pending
/// request of the handle, and to every later call, as the same value.
///
/// # Examples
///
/// ```
/// use anyframe::{Error, ErrorKind};
///
/// let e = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// assert_eq!(e.kind(), ErrorKind::Io);
/// assert!(e.is_fatal());
/// let io: std::io::Error = e.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

/// The text of [`Error::eof_in_request`].
const EOF_IN_REQUEST: &str = "end of input while a read request was waiting";

struct Inner {
    kind: ErrorKind,
    fatal: bool,
    /// The error says the input ended (not, say, a write to a closed socket).
    eof: bool,
    /// The timer whose expiry this is.
    timer: Option<crate::Timeout>,
    message: &'static str,
    source: Option<Source>,
}

enum Source {
    Codec(codecs::Error),
    Io(io::Error),
    #[cfg(any(feature = "tls", feature = "rustls"))]
    Tls(crate::tls::TlsError),
    Other(Box<dyn StdError + Send + Sync>),
    /// An error of ours that this one gives a new meaning to.
    Cause(Error),
}

impl Source {
    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match self {
            Source::Codec(e) => e,
            Source::Io(e) => e,
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Source::Tls(e) => e,
            Source::Other(e) => &**e,
            Source::Cause(e) => e,
        }
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, fatal: bool, message: &'static str) -> Error {
        Error {
            inner: Arc::new(Inner {
                kind,
                fatal,
                eof: false,
                timer: None,
                message,
                source: None,
            }),
        }
    }

    fn with(kind: ErrorKind, fatal: bool, message: &'static str, source: Source) -> Error {
        Error {
            inner: Arc::new(Inner {
                kind,
                fatal,
                eof: false,
                timer: None,
                message,
                source: Some(source),
            }),
        }
    }

    /// Marks this error as caused by the end of input.
    fn at_eof(mut self) -> Error {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.eof = true;
        }
        self
    }

    /// An encoder's error: it refused its item, nothing of which was
    /// queued, so the connection goes on and the error is not fatal,
    /// whatever the encoder said (tokio-util's encoders speak `io::Error`,
    /// which converts to a fatal I/O error). Its kind and source stay.
    pub(crate) fn refused_by_encoder(self) -> Error {
        const REFUSED: &str = "the encoder refused the item";
        if !self.is_fatal() {
            return self;
        }
        let kind = self.kind();
        match Arc::try_unwrap(self.inner) {
            Ok(Inner {
                source: Some(source),
                ..
            }) => Error::with(kind, false, REFUSED, source),
            Ok(inner) => Error::new(kind, false, inner.message),
            Err(shared) => {
                Error::with(kind, false, REFUSED, Source::Cause(Error { inner: shared }))
            }
        }
    }

    /// EOF while a read request was waiting: `EPIPE`, fatal ([RQ-6](crate::semantics#RQ-6)).
    pub(crate) fn eof_in_request() -> Error {
        Error::new(ErrorKind::BrokenPipe, true, EOF_IN_REQUEST).at_eof()
    }

    /// Whether this is [`eof_in_request`](Self::eof_in_request): the
    /// engine's, made when a decoder had no frame at the end of input, not
    /// an error a decoder returned.
    pub(crate) fn is_eof_in_request(&self) -> bool {
        self.inner.eof && self.inner.source.is_none() && self.inner.message == EOF_IN_REQUEST
    }

    /// A pipelined response that could not be decoded: the stream is out
    /// of step, so the error closes the connection.
    pub(crate) fn out_of_step(e: Error) -> Error {
        Error::fatal_because(
            e,
            "a pipelined response could not be decoded; the stream is out of step",
        )
    }

    /// `e` made fatal by what it means here: `message` says why.
    pub(crate) fn fatal_because(e: Error, message: &'static str) -> Error {
        Error::with(e.kind(), true, message, Source::Cause(e))
    }

    /// The service of a server loop failed: the loop ends with its error.
    #[cfg(feature = "tower")]
    pub(crate) fn service(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Error {
        Error::with(
            ErrorKind::Io,
            true,
            "the service failed",
            Source::Other(e.into()),
        )
    }

    /// A user callback panicked while the engine ran it.
    pub(crate) fn panicked(text: &str) -> Error {
        Error::with(
            ErrorKind::Panicked,
            true,
            "a user callback panicked",
            Source::Other(text.to_owned().into()),
        )
    }

    /// The handle is gone.
    pub(crate) fn closed() -> Error {
        Error::new(ErrorKind::Closed, true, "the connection is closed")
    }

    /// A failure of the IO underneath: always fatal. The transport's own
    /// `ETIMEDOUT` (a keepalive or retransmission timeout) is `Io` too:
    /// `TimedOut` is for this crate's timers, which `Error::timeout` names.
    pub(crate) fn transport(e: io::Error) -> Error {
        let kind = match e.kind() {
            io::ErrorKind::BrokenPipe => ErrorKind::BrokenPipe,
            _ => ErrorKind::Io,
        };
        Error::with(kind, true, "transport error", Source::Io(e))
    }

    /// Every address failed to connect; `last` is the last cause.
    pub(crate) fn connect(last: io::Error) -> Error {
        Error::with(ErrorKind::Io, true, "connect failed", Source::Io(last))
    }

    /// A buffer cap was crossed: `ENOSPC`, fatal.
    pub(crate) fn no_space(message: &'static str) -> Error {
        Error::new(ErrorKind::NoSpace, true, message)
    }

    /// A timeout expired: `ETIMEDOUT`, non-fatal ([TO-3](crate::semantics#TO-3)).
    pub(crate) fn timed_out(message: &'static str) -> Error {
        Error::new(ErrorKind::TimedOut, false, message)
    }

    /// The error the engine gives when the timer `which` expires with no
    /// hook: `ETIMEDOUT`, non-fatal ([TO-3](crate::semantics#TO-3)), naming the timer. An
    /// `on_timeout` hook that passes timeouts on as errors makes them with
    /// this.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::{Error, ErrorKind, Timeout};
    ///
    /// let e = Error::timer_expired(Timeout::Read);
    /// assert_eq!(e.kind(), ErrorKind::TimedOut);
    /// assert_eq!(e.timeout(), Some(Timeout::Read));
    /// assert!(!e.is_fatal());
    /// ```
    pub fn timer_expired(which: crate::Timeout) -> Error {
        let mut e = Error::timed_out(which.name());
        if let Some(inner) = Arc::get_mut(&mut e.inner) {
            inner.timer = Some(which);
        }
        e
    }

    /// An item longer than the whole of `wbuf_max`: it can never be
    /// queued, so it is refused with nothing queued, non-fatal
    /// ([OPT-9](crate::semantics#OPT-9)).
    pub(crate) fn longer_than_wbuf_max() -> Error {
        Error::invalid_input("an item longer than wbuf_max can never be queued")
    }

    /// The caller misused the API; nothing was done.
    pub(crate) fn invalid_input(message: &'static str) -> Error {
        Error::new(ErrorKind::InvalidInput, false, message)
    }

    /// Wraps any error of a user's codec or service with an explicit kind.
    ///
    /// Use it in a `From<YourError> for anyframe::Error` impl so your own
    /// decoder can be used with [`QueuedFramed`](crate::QueuedFramed).
    pub fn custom(
        kind: ErrorKind,
        fatal: bool,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Error {
        Error::with(
            kind,
            fatal,
            "codec or service error",
            Source::Other(source.into()),
        )
    }

    /// The errno-like class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether this error closed the connection ([ERR-2](crate::semantics#ERR-2)). A fatal error
    /// fails every pending request and every later call with the same error.
    pub fn is_fatal(&self) -> bool {
        self.inner.fatal
    }

    /// True for `ETIMEDOUT`: a connection's idle, read or write timer
    /// expired (a transport that times out itself, as a TCP keepalive
    /// does, and a connect that times out are [`Io`](ErrorKind::Io)
    /// errors).
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::TimedOut
    }

    /// Which timer expired, for the `ETIMEDOUT` of a timeout (`None` for
    /// every other error).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use anyframe::codecs::LineCodec;
    /// use anyframe::{QueuedFramed, Timeout};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let (io, _peer) = tokio::io::duplex(64);
    /// let mut conn = QueuedFramed::builder()
    ///     .rtimeout(Duration::from_secs(5))
    ///     .build(io);
    /// let e = conn.read(LineCodec::new()).await.unwrap_err();
    /// assert_eq!(e.timeout(), Some(Timeout::Read));
    /// # }
    /// ```
    pub fn timeout(&self) -> Option<crate::Timeout> {
        match &self.inner.source {
            Some(Source::Cause(e)) if self.inner.timer.is_none() => e.timeout(),
            _ => self.inner.timer,
        }
    }

    /// True when the input ended while a frame was expected (`EPIPE` from a
    /// read request or a decoder at end of input). False for every other
    /// error, including an `EPIPE` from writing to a closed connection.
    pub fn is_eof(&self) -> bool {
        match &self.inner.source {
            Some(Source::Cause(e)) => self.inner.eof || e.is_eof(),
            _ => self.inner.eof,
        }
    }

    /// True when a user callback panicked inside the engine.
    pub fn is_panic(&self) -> bool {
        self.inner.kind == ErrorKind::Panicked
    }

    /// The codec error behind this error, if a decoder or encoder failed.
    pub fn codec_error(&self) -> Option<&codecs::Error> {
        match &self.inner.source {
            Some(Source::Codec(e)) => Some(e),
            Some(Source::Cause(e)) => e.codec_error(),
            _ => None,
        }
    }

    /// The TLS error behind this error: a failed handshake, a protocol
    /// error, or a TCP end of input without close_notify
    /// ([`TlsError::is_truncated`](crate::tls::TlsError::is_truncated)).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn tls_error(&self) -> Option<&crate::tls::TlsError> {
        match &self.inner.source {
            Some(Source::Tls(e)) => Some(e),
            Some(Source::Cause(e)) => e.tls_error(),
            _ => None,
        }
    }

    /// The I/O error behind this error, if the transport failed (also
    /// during a TLS handshake or `stoptls`).
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.inner.source {
            Some(Source::Io(e)) => Some(e),
            // The IO failed under TLS (a handshake, a `stoptls`).
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Some(Source::Tls(e)) => e.io_source(),
            Some(Source::Cause(e)) => e.io_error(),
            _ => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("fatal", &self.inner.fatal)
            .field("message", &self.inner.message);
        if let Some(s) = &self.inner.source {
            d.field("source", &s.as_error());
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_chain(f, true)
    }
}

impl Error {
    /// The message, the kind unless the error this one wraps names the
    /// same, and what is behind it.
    fn write_chain(&self, f: &mut fmt::Formatter<'_>, name_kind: bool) -> fmt::Result {
        f.write_str(self.inner.message)?;
        if name_kind {
            write!(f, " ({})", self.inner.kind.errno_name())?;
        }
        match &self.inner.source {
            Some(Source::Cause(e)) => {
                f.write_str(": ")?;
                e.write_chain(f, e.kind() != self.kind())
            }
            Some(s) => {
                // A source that begins by saying what this error says
                // ("TLS handshake failed: …") is shown from where it goes on.
                let text = s.as_error().to_string();
                match text.strip_prefix(self.inner.message) {
                    Some("") => Ok(()),
                    Some(rest) if rest.starts_with(": ") => f.write_str(rest),
                    _ => write!(f, ": {text}"),
                }
            }
            None => Ok(()),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_error() as &(dyn StdError + 'static))
    }
}

impl From<codecs::Error> for Error {
    fn from(e: codecs::Error) -> Error {
        let kind = match e.kind() {
            codecs::ErrorKind::BrokenPipe => ErrorKind::BrokenPipe,
            codecs::ErrorKind::BadMessage => ErrorKind::BadMessage,
            codecs::ErrorKind::NoSpace => ErrorKind::NoSpace,
            codecs::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            _ => ErrorKind::Io,
        };
        let fatal = e.is_fatal();
        let eof = kind == ErrorKind::BrokenPipe;
        let e = Error::with(kind, fatal, "codec error", Source::Codec(e));
        if eof { e.at_eof() } else { e }
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl From<crate::tls::TlsError> for Error {
    /// Handshake, protocol and truncation failures are `EPROTO`, fatal (the
    /// connection never goes on unencrypted); a TLS call on a connection in
    /// the wrong state is `EINVAL`, non-fatal; a failure of the connection
    /// underneath is an I/O error.
    fn from(e: crate::tls::TlsError) -> Error {
        use crate::tls::TlsErrorKind as K;
        let (kind, fatal, message) = match e.kind() {
            K::Handshake => (ErrorKind::Protocol, true, "TLS handshake failed"),
            K::Truncated => (
                ErrorKind::Protocol,
                true,
                "TLS stream truncated (end of input without close_notify)",
            ),
            K::AlreadyTls => (ErrorKind::InvalidInput, false, "TLS switch refused"),
            K::Config => (ErrorKind::InvalidInput, false, "bad TLS configuration"),
            // Classified as any transport error (`EPIPE` stays `EPIPE`).
            K::Io if e.io_source().map(io::Error::kind) == Some(io::ErrorKind::BrokenPipe) => {
                (ErrorKind::BrokenPipe, true, "transport error under TLS")
            }
            K::Io => (ErrorKind::Io, true, "transport error under TLS"),
            _ => (ErrorKind::Protocol, true, "TLS protocol error"),
        };
        Error::with(kind, fatal, message, Source::Tls(e))
    }
}

impl From<io::Error> for Error {
    /// Converts any `io::Error`: the error of a codec (tokio-util codecs use
    /// `io::Error`), and also every `?` on an I/O call in code that returns
    /// [`anyframe::Result`](crate::Result) (writing to a peer, binding a
    /// listener, as in the examples). The mapping is the same whatever the
    /// source, and written for codecs:
    ///
    /// * an `io::Error` that carries an error of this crate or of the codecs
    ///   crate (made by the conversion the other way) is that error again,
    ///   with its kind and fatality;
    /// * [`io::ErrorKind::InvalidData`] is [`ErrorKind::BadMessage`]
    ///   (`EBADMSG`), non-fatal;
    /// * [`io::ErrorKind::UnexpectedEof`] is [`ErrorKind::BrokenPipe`]
    ///   (`EPIPE`), fatal, marked as caused by the end of input;
    /// * [`io::ErrorKind::BrokenPipe`] is `EPIPE`, fatal;
    /// * anything else is [`ErrorKind::Io`] (`EIO`), fatal.
    ///
    /// In the last four cases the original error stays reachable through
    /// [`io_error`](Error::io_error) and the
    /// [`source`](std::error::Error::source).
    fn from(e: io::Error) -> Error {
        let e = match e.downcast::<Error>() {
            Ok(ours) => return ours,
            Err(e) => e,
        };
        let e = match e.downcast::<codecs::Error>() {
            Ok(codec) => return Error::from(codec),
            Err(e) => e,
        };
        match e.kind() {
            io::ErrorKind::InvalidData => {
                Error::with(ErrorKind::BadMessage, false, "codec error", Source::Io(e))
            }
            io::ErrorKind::UnexpectedEof => {
                Error::with(ErrorKind::BrokenPipe, true, "codec error", Source::Io(e)).at_eof()
            }
            _ => Error::transport(e),
        }
    }
}

impl From<tokio_util::codec::LinesCodecError> for Error {
    fn from(e: tokio_util::codec::LinesCodecError) -> Error {
        match e {
            tokio_util::codec::LinesCodecError::Io(io) => io.into(),
            // Fatal: tokio-util's codec consumes nothing when it says so
            // and skips the line only at its next call, with its state;
            // a read that takes its decoder by value (`read`, a Handle's
            // reads) would meet the same error again without end.
            other => Error::custom(ErrorKind::NoSpace, true, other),
        }
    }
}

impl From<tokio_util::codec::AnyDelimiterCodecError> for Error {
    fn from(e: tokio_util::codec::AnyDelimiterCodecError) -> Error {
        match e {
            tokio_util::codec::AnyDelimiterCodecError::Io(io) => io.into(),
            // Fatal, as for `LinesCodecError`.
            other => Error::custom(ErrorKind::NoSpace, true, other),
        }
    }
}

impl From<Error> for io::Error {
    /// A transport error comes back as the original kind; everything else
    /// maps to the nearest [`io::ErrorKind`] and keeps this error inside.
    fn from(e: Error) -> io::Error {
        let kind = match e.kind() {
            ErrorKind::BrokenPipe => match &e.inner.source {
                Some(Source::Io(io)) => io.kind(),
                _ => io::ErrorKind::UnexpectedEof,
            },
            ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            ErrorKind::BadMessage | ErrorKind::NoSpace | ErrorKind::Protocol => {
                io::ErrorKind::InvalidData
            }
            ErrorKind::Io => match &e.inner.source {
                Some(Source::Io(io)) => io.kind(),
                _ => io::ErrorKind::Other,
            },
            ErrorKind::Closed => io::ErrorKind::NotConnected,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::Panicked => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A codec whose `Error` is `io::Error` (as tokio-util's are) wrapping
    /// one of ours: the typed error inside comes back as it was, not as a
    /// non-fatal `EBADMSG` (from `InvalidData`) or a fatal `EIO`.
    /// A line over its codec's limit: `ENOSPC`.
    fn line_too_long() -> codecs::Error {
        let mut codec = codecs::LineCodec::builder().max_length(4).build().unwrap();
        let mut buf = bytes::BytesMut::from(&b"too long\n"[..]);
        tokio_util::codec::Decoder::decode(&mut codec, &mut buf).unwrap_err()
    }

    /// Each kind becomes the `io::ErrorKind` that §8 of the semantics names;
    /// a transport error keeps its own.
    #[test]
    fn each_kind_maps_to_the_io_kind_the_semantics_names() {
        let io_kind = |e: Error| io::Error::from(e).kind();
        for (kind, want) in [
            (ErrorKind::BrokenPipe, io::ErrorKind::UnexpectedEof),
            (ErrorKind::TimedOut, io::ErrorKind::TimedOut),
            (ErrorKind::BadMessage, io::ErrorKind::InvalidData),
            (ErrorKind::NoSpace, io::ErrorKind::InvalidData),
            (ErrorKind::Protocol, io::ErrorKind::InvalidData),
            (ErrorKind::Io, io::ErrorKind::Other),
            (ErrorKind::Closed, io::ErrorKind::NotConnected),
            (ErrorKind::InvalidInput, io::ErrorKind::InvalidInput),
            (ErrorKind::Panicked, io::ErrorKind::Other),
        ] {
            assert_eq!(io_kind(Error::new(kind, true, "test")), want, "{kind:?}");
        }
        for transport in [io::ErrorKind::ConnectionReset, io::ErrorKind::BrokenPipe] {
            let e = Error::from(io::Error::from(transport));
            assert_eq!(io_kind(e), transport);
        }
    }

    #[test]
    fn typed_errors_through_io_and_back_are_themselves() {
        let ours = Error::from(line_too_long());
        assert_eq!((ours.kind(), ours.is_fatal()), (ErrorKind::NoSpace, true));
        let back = Error::from(io::Error::from(ours));
        assert_eq!(
            (back.kind(), back.is_fatal()),
            (ErrorKind::NoSpace, true),
            "{back:?}"
        );
        assert!(back.codec_error().is_some());

        let codec = line_too_long();
        let fatal = codec.is_fatal();
        let back = Error::from(io::Error::from(codec));
        assert_eq!(
            (back.kind(), back.is_fatal()),
            (ErrorKind::NoSpace, fatal),
            "{back:?}"
        );
        assert_eq!(back.codec_error().map(codecs::Error::codec), Some("line"));

        let timeout = Error::timed_out("read timeout");
        let back = Error::from(io::Error::from(timeout));
        assert_eq!((back.kind(), back.is_fatal()), (ErrorKind::TimedOut, false));
    }

    #[test]
    fn codec_errors_keep_kind_and_fatality() {
        let mut buf = bytes::BytesMut::from(&b"x"[..]);
        let ce = tokio_util::codec::Decoder::decode_eof(&mut codecs::ChunkCodec::new(4), &mut buf)
            .unwrap_err();
        let e = Error::from(ce);
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
        assert!(e.is_fatal());
        assert!(e.codec_error().is_some());
    }

    #[test]
    fn display_names_errno() {
        let e = Error::timed_out("read timeout");
        assert_eq!(e.to_string(), "read timeout (ETIMEDOUT)");
        assert!(!e.is_fatal());
    }

    #[test]
    fn display_says_each_thing_once() {
        // A source that repeats the message is shown from where it goes on.
        let e = Error::with(
            ErrorKind::Protocol,
            true,
            "TLS handshake failed",
            Source::Other("TLS handshake failed: bad certificate".into()),
        );
        assert_eq!(
            e.to_string(),
            "TLS handshake failed (EPROTO): bad certificate"
        );
        // A wrapped error of the same kind does not name the kind again.
        let inner = Error::with(
            ErrorKind::BadMessage,
            false,
            "codec error",
            Source::Other("json: trailing comma".into()),
        );
        let outer = Error::fatal_because(inner, "the stream is out of step");
        assert_eq!(
            outer.to_string(),
            "the stream is out of step (EBADMSG): codec error: json: trailing comma"
        );
        // Sources that say something else are shown whole.
        let io = Error::connect(io::Error::other("refused"));
        assert!(io.to_string().ends_with(": refused"), "{io}");
    }
}
