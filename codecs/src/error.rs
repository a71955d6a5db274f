//! The crate's one error type.
//!
//! Every codec in this crate reports failures as [`Error`]. An error has an
//! errno-like [`ErrorKind`] (the same vocabulary AnyEvent::Handle uses:
//! EPIPE, EBADMSG, ENOSPC, ...), a fatality flag, and context: which codec
//! failed, the limit that was crossed, how many bytes had been seen, the
//! offset of the problem and the first offending bytes.
//!
//! Incomplete input is never an error: decoders return `Ok(None)` and wait.

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// How many offending bytes an error keeps for its message.
///
/// Enough to recognise a protocol mix-up (`GET / HTTP/1.1`, a TLS record
/// header) without copying a whole hostile frame into the error.
pub const SNIPPET_LEN: usize = 16;

/// The errno-like class of an [`Error`].
///
/// The names follow the errno values AnyEvent::Handle reports, so code ported
/// from Perl can match on the same conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `EPIPE`: the input ended in the middle of a frame (see
    /// `Decoder::decode_eof`). The partial frame is still in the buffer.
    BrokenPipe,
    /// `EBADMSG`: the peer sent bytes that are not a valid frame of this
    /// format (bad header, rejected by a regex, invalid JSON or CBOR, invalid
    /// UTF-8, nesting or size over a JSON/CBOR limit).
    BadMessage,
    /// `ENOSPC`: a frame is larger than the codec's configured limit.
    NoSpace,
    /// `EINVAL`: the caller asked for something the format cannot express,
    /// such as encoding a 300-byte payload behind a one-byte length prefix.
    /// Nothing was written.
    InvalidInput,
    /// An I/O error reached the codec (only through `Framed` plumbing, which
    /// requires `From<io::Error>`).
    Io,
}

impl ErrorKind {
    /// The errno name this kind stands for (`"EPIPE"`, `"EBADMSG"`, ...).
    pub fn errno_name(self) -> &'static str {
        match self {
            ErrorKind::BrokenPipe => "EPIPE",
            ErrorKind::BadMessage => "EBADMSG",
            ErrorKind::NoSpace => "ENOSPC",
            ErrorKind::InvalidInput => "EINVAL",
            ErrorKind::Io => "EIO",
        }
    }

    /// Whether errors of this kind are fatal unless the codec says otherwise.
    fn default_fatal(self) -> bool {
        !matches!(self, ErrorKind::BadMessage | ErrorKind::InvalidInput)
    }
}

/// Which detail of the format failed, for the narrow `is_*` predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    None,
    Utf8,
    Limit,
}

/// The error type of every codec in this crate.
///
/// Shaped like [`std::io::Error`]: private fields, a [`kind`](Error::kind),
/// and predicates. It is one pointer wide, so `Result<Option<Frame>, Error>`
/// stays small on the hot path.
///
/// After an error, the decoder's documentation says what was consumed; bytes
/// it did not consume are still in the caller's buffer.
///
/// Its text (`Display`) is `<codec>: <reason>`, then what is known of the
/// limit, the size seen, the offset, the offending bytes and the underlying
/// error. The errno is not repeated in it: it is [`kind`](Error::kind), so
/// an error that wraps this one and shows the kind says it once.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{ErrorKind, NetstringCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = NetstringCodec::new();
/// let mut buf = BytesMut::from(&b"01:x,"[..]);
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::BadMessage);
/// assert_eq!(err.codec(), "netstring");
/// assert!(!err.is_fatal());
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    fatal: bool,
    detail: Detail,
    codec: &'static str,
    reason: &'static str,
    limit: Option<u64>,
    seen: Option<u64>,
    offset: Option<u64>,
    snippet: Vec<u8>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    fn new(kind: ErrorKind, codec: &'static str, reason: &'static str) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                fatal: kind.default_fatal(),
                detail: Detail::None,
                codec,
                reason,
                limit: None,
                seen: None,
                offset: None,
                snippet: Vec::new(),
                source: None,
            }),
        }
    }

    /// `EBADMSG`: malformed input. Non-fatal by default.
    pub(crate) fn bad_message(codec: &'static str, reason: &'static str) -> Error {
        Error::new(ErrorKind::BadMessage, codec, reason)
    }

    /// A frame (or declared length) over the codec's `limit`; `seen` is how
    /// large it was known to be when the codec gave up. `ENOSPC`, fatal.
    pub(crate) fn too_large(codec: &'static str, limit: usize, seen: u64) -> Error {
        let mut e = Error::new(
            ErrorKind::NoSpace,
            codec,
            "frame exceeds the configured limit (the codec's max_length)",
        );
        e.inner.detail = Detail::Limit;
        e.inner.limit = Some(limit as u64);
        e.inner.seen = Some(seen);
        e
    }

    /// A size or depth limit of a self-delimiting format (JSON, CBOR), which
    /// is reported as `EBADMSG` (docs/semantics.md §8).
    #[cfg(any(feature = "json", feature = "cbor"))]
    pub(crate) fn limit_bad_message(
        codec: &'static str,
        reason: &'static str,
        limit: usize,
        seen: u64,
    ) -> Error {
        let mut e = Error::new(ErrorKind::BadMessage, codec, reason);
        e.inner.detail = Detail::Limit;
        e.inner.limit = Some(limit as u64);
        e.inner.seen = Some(seen);
        e
    }

    /// The input ended inside a frame; `buffered` bytes are left in the buffer.
    pub(crate) fn incomplete_at_eof(codec: &'static str, buffered: usize) -> Error {
        let mut e = Error::new(ErrorKind::BrokenPipe, codec, "end of input inside a frame");
        e.inner.seen = Some(buffered as u64);
        e
    }

    /// Invalid UTF-8 at `offset` of the frame. `EBADMSG`, non-fatal.
    pub(crate) fn utf8(codec: &'static str, offset: usize, source: std::str::Utf8Error) -> Error {
        let mut e = Error::new(ErrorKind::BadMessage, codec, "invalid UTF-8");
        e.inner.detail = Detail::Utf8;
        e.inner.offset = Some(offset as u64);
        e.inner.source = Some(Box::new(source));
        e
    }

    /// The caller asked the encoder for something the format cannot carry.
    pub(crate) fn invalid_input(codec: &'static str, reason: &'static str) -> Error {
        Error::new(ErrorKind::InvalidInput, codec, reason)
    }

    /// Records the offset (into the frame or buffer, as the codec documents)
    /// where the problem was found.
    pub(crate) fn at(mut self, offset: usize) -> Error {
        self.inner.offset = Some(offset as u64);
        self
    }

    /// Keeps up to [`SNIPPET_LEN`] offending bytes for the message.
    pub(crate) fn with_bytes(mut self, bytes: &[u8]) -> Error {
        let n = bytes.len().min(SNIPPET_LEN);
        self.inner.snippet = bytes[..n].to_vec();
        self
    }

    /// Records the configured limit that applies.
    pub(crate) fn with_limit(mut self, limit: usize) -> Error {
        self.inner.limit = Some(limit as u64);
        self
    }

    /// Records a configured limit the item crossed: [`is_limit`] is true.
    ///
    /// [`is_limit`]: Error::is_limit
    pub(crate) fn over_limit(mut self, limit: usize) -> Error {
        self.inner.detail = Detail::Limit;
        self.with_limit(limit)
    }

    /// Records how many bytes had been seen.
    pub(crate) fn with_seen(mut self, seen: u64) -> Error {
        self.inner.seen = Some(seen);
        self
    }

    /// Overrides the kind's default fatality.
    pub(crate) fn fatal(mut self, fatal: bool) -> Error {
        self.inner.fatal = fatal;
        self
    }

    /// Attaches an underlying cause (a serde error, say).
    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Error {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// The errno-like class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether the stream can no longer be trusted after this error.
    ///
    /// A fatal error means the byte stream is out of step (a frame over the
    /// limit with the fatal overflow policy, input ending mid-frame, I/O).
    /// A non-fatal one (`EBADMSG` on a self-contained frame, `EINVAL` from an
    /// encoder) fails one frame; the codec's docs say what was consumed and
    /// decoding may go on.
    pub fn is_fatal(&self) -> bool {
        self.inner.fatal
    }

    /// The codec that reported the error (`"line"`, `"json"`, ...).
    pub fn codec(&self) -> &'static str {
        self.inner.codec
    }

    /// A short, static description of what was wrong.
    pub fn reason(&self) -> &'static str {
        self.inner.reason
    }

    /// The configured limit that was crossed, if this is a limit error.
    pub fn limit(&self) -> Option<u64> {
        self.inner.limit
    }

    /// How many bytes the codec had seen (or the declared length it read)
    /// when it gave up; for `BrokenPipe`, the bytes left in the buffer.
    pub fn seen(&self) -> Option<u64> {
        self.inner.seen
    }

    /// Where the problem was found, as the codec documents it.
    pub fn offset(&self) -> Option<u64> {
        self.inner.offset
    }

    /// Up to [`SNIPPET_LEN`] of the offending bytes (may be empty).
    pub fn bytes(&self) -> &[u8] {
        &self.inner.snippet
    }

    /// True for invalid UTF-8.
    pub fn is_utf8(&self) -> bool {
        self.inner.detail == Detail::Utf8
    }

    /// True when a configured size or depth limit was crossed.
    pub fn is_limit(&self) -> bool {
        self.inner.detail == Detail::Limit
    }

    /// True when the input ended inside a frame.
    pub fn is_incomplete(&self) -> bool {
        self.inner.kind == ErrorKind::BrokenPipe
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind)
            .field("fatal", &i.fatal)
            .field("codec", &i.codec)
            .field("reason", &i.reason);
        if let Some(l) = i.limit {
            d.field("limit", &l);
        }
        if let Some(s) = i.seen {
            d.field("seen", &s);
        }
        if let Some(o) = i.offset {
            d.field("offset", &o);
        }
        if !i.snippet.is_empty() {
            d.field("bytes", &Snippet(&i.snippet));
        }
        if let Some(s) = &i.source {
            d.field("source", s);
        }
        d.finish()
    }
}

struct Snippet<'a>(&'a [u8]);

impl fmt::Debug for Snippet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0 {
            for c in std::ascii::escape_default(b) {
                fmt::Write::write_char(f, c as char)?;
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        // The kind is not in the text: it is `kind()`, and whoever wraps
        // this error shows it once (the `anyframe` error prints `(EBADMSG)`).
        write!(f, "{}: {}", i.codec, i.reason)?;
        if let Some(l) = i.limit {
            write!(f, ", limit {l}")?;
        }
        match (i.seen, i.detail) {
            // A decoder gives up as soon as it knows a frame is too long;
            // an encoder refusing an item knows its whole length.
            (Some(s), Detail::Limit) if i.kind != ErrorKind::InvalidInput => {
                write!(f, ", seen at least {s}")?;
            }
            (Some(s), _) => write!(f, ", seen {s}")?,
            (None, _) => {}
        }
        if let Some(o) = i.offset {
            write!(f, ", at offset {o}")?;
        }
        if !i.snippet.is_empty() {
            write!(f, ", bytes {:?}", Snippet(&i.snippet))?;
        }
        if let Some(s) = &i.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

impl From<io::Error> for Error {
    /// An I/O error, as kind [`ErrorKind::Io`]; one that carries an
    /// [`Error`] of this crate (made by the conversion the other way, in a
    /// codec whose error type is `io::Error`) is that error again.
    fn from(e: io::Error) -> Error {
        match e.downcast::<Error>() {
            Ok(ours) => ours,
            Err(e) => Error::new(ErrorKind::Io, "io", "I/O error").with_source(e),
        }
    }
}

impl From<Error> for io::Error {
    /// Maps to the nearest [`io::ErrorKind`]; an I/O error that passed
    /// through comes back as it was, anything else keeps the typed error as
    /// the `io::Error`'s inner error (reach it with `get_ref`/`downcast`).
    fn from(e: Error) -> io::Error {
        let kind = match e.kind() {
            ErrorKind::BrokenPipe => io::ErrorKind::UnexpectedEof,
            ErrorKind::BadMessage | ErrorKind::NoSpace => io::ErrorKind::InvalidData,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::Io => {
                let mut e = e;
                return match e.inner.source.take().map(|s| s.downcast::<io::Error>()) {
                    Some(Ok(io)) => *io,
                    Some(Err(other)) => io::Error::other(other),
                    None => io::Error::other("I/O error"),
                };
            }
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_context() {
        let e = Error::too_large("line", 8, 9).with_bytes(b"GET / HTTP/1.1\r\n extra");
        let s = e.to_string();
        assert!(s.starts_with("line: frame exceeds"), "{s}");
        assert!(s.contains("max_length"), "says which setting: {s}");
        assert!(
            s.contains("limit 8") && s.contains("seen at least 9"),
            "{s}"
        );
        assert!(s.contains(r#"bytes "GET / HTTP/1.1\r\n""#), "{s}");
        assert!(e.is_fatal() && e.is_limit());
    }

    /// The text names the codec and the reason, not the errno: whoever
    /// shows the kind (the `anyframe` error does, as `(EBADMSG)`) says it
    /// once, and the codec error behind it does not repeat it.
    #[test]
    fn display_says_the_kind_once_when_wrapped() {
        let e = Error::bad_message("json", "expected a JSON value").at(3);
        assert_eq!(e.to_string(), "json: expected a JSON value, at offset 3");
        let wrapped = format!("codec error ({}): {e}", e.kind().errno_name());
        assert_eq!(wrapped.matches("EBADMSG").count(), 1, "{wrapped}");
        let io: io::Error = e.into();
        assert_eq!(io.to_string().matches("json").count(), 1, "{io}");
    }

    #[test]
    fn io_round_trip_keeps_the_original() {
        let io = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let e: Error = io.into();
        assert_eq!(e.kind(), ErrorKind::Io);
        let back: io::Error = e.into();
        assert_eq!(back.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn typed_error_survives_into_io() {
        let e = Error::bad_message("netstring", "bad header");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        let inner = io.into_inner().unwrap().downcast::<Error>().unwrap();
        assert_eq!(inner.codec(), "netstring");
    }

    #[test]
    fn typed_error_through_io_and_back_is_itself() {
        let e = Error::bad_message("netstring", "bad header");
        assert!(!e.is_fatal());
        let io: io::Error = e.into();
        let back: Error = io.into();
        assert_eq!(
            (back.kind(), back.is_fatal(), back.codec()),
            (ErrorKind::BadMessage, false, "netstring"),
            "{back:?}"
        );
    }

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
