//! [`Utf8LineCodec`]: the same lines as [`LineCodec`], checked and copied
//! into one `String` each.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::eol::Eol;
use super::{CODEC, LineCodec, LineCodecBuilder, OverflowPolicy, Utf8Line};
use crate::error::Error;

/// A decoder and encoder for UTF-8 lines, with [`Utf8Line`] frames.
///
/// Framing is exactly [`LineCodec`]'s (same builder, same limits and
/// errors); each line then costs one allocation: the line and its EOL are
/// checked and copied into one `String`.
///
/// # Errors and state
///
/// Besides [`LineCodec`]'s errors: a line (or regex-matched EOL) that is not
/// valid UTF-8 gives a **non-fatal** `EBADMSG` ([`Error::is_utf8`]) whose
/// [`offset`](Error::offset) is where the bad bytes start in the line. The
/// bad line and its EOL are consumed, so decoding goes on with the next line.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::Utf8LineCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = Utf8LineCodec::new();
/// let mut buf = BytesMut::from(&b"caf\xc3\xa9\r\nbad \xff\nok\n"[..]);
/// let line = codec.decode(&mut buf)?.unwrap();
/// assert_eq!((line.line(), line.eol()), ("café", "\r\n"));
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert!(err.is_utf8() && !err.is_fatal());
/// assert_eq!(codec.decode(&mut buf)?.unwrap().into_line(), "ok");
///
/// let mut out = BytesMut::new();
/// codec.encode("thé", &mut out)?;
/// assert_eq!(out, "thé\n");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Utf8LineCodec {
    inner: LineCodec,
}

impl Utf8LineCodec {
    /// As [`LineCodec::new`]: `\r?\n`, [`DEFAULT_LINE_MAX_LENGTH`](crate::DEFAULT_LINE_MAX_LENGTH), fatal
    /// overflow, writing `\n`.
    pub fn new() -> Utf8LineCodec {
        Utf8LineCodec {
            inner: LineCodec::new(),
        }
    }

    /// A builder; finish it with [`LineCodecBuilder::build_utf8`].
    pub fn builder() -> LineCodecBuilder {
        LineCodecBuilder::new()
    }

    /// The longest line accepted, in bytes, EOL excluded.
    pub fn max_length(&self) -> usize {
        self.inner.max_length
    }

    /// What happens to a line over [`max_length`](Self::max_length).
    pub fn overflow_policy(&self) -> OverflowPolicy {
        self.inner.overflow
    }

    /// True while an over-long line is being dropped.
    pub fn is_discarding(&self) -> bool {
        self.inner.is_discarding()
    }

    #[inline(always)]
    fn decode_with(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Utf8Line>, Error> {
        let Some((line_len, eol_len)) = self.inner.next_line(buf, eof)? else {
            return Ok(None);
        };
        // An all-ASCII line (the usual case) is checked with the inlined
        // word-at-a-time `is_ascii`, and its frame is built here as the
        // value returned, so it stays in registers. Built in a helper and
        // wrapped in `Some` on the way out, it would be copied through the
        // stack by a 16-byte load of two 8-byte stores: a store-forwarding
        // stall, 7% of a 40-byte line.
        let total = line_len + eol_len;
        if !buf[..total].is_ascii() {
            return checked_line(buf, line_len, eol_len).map(Some);
        }
        // SAFETY: an ASCII byte string is valid UTF-8.
        #[allow(unsafe_code)]
        let text = unsafe { String::from_utf8_unchecked(buf[..total].to_vec()) };
        buf.advance(total);
        Ok(Some(Utf8Line { text, line_len }))
    }
}

/// Copies a line with a byte outside ASCII and its EOL into one `String`
/// and consumes them, also when they are not UTF-8 (the error says where).
#[inline(never)]
fn checked_line(buf: &mut BytesMut, line_len: usize, eol_len: usize) -> Result<Utf8Line, Error> {
    let total = line_len + eol_len;
    let bytes = &buf[..total];
    let result = match std::str::from_utf8(bytes) {
        Ok(text) if text.is_char_boundary(line_len) => Ok(Utf8Line {
            text: text.to_owned(),
            line_len,
        }),
        // A regex EOL that starts inside a character: the line alone is bad.
        Ok(_) => Err(match std::str::from_utf8(&bytes[..line_len]) {
            Err(e) => Error::utf8(CODEC, e.valid_up_to(), e).with_bytes(&bytes[e.valid_up_to()..]),
            Ok(_) => Error::bad_message(CODEC, "end of line splits a UTF-8 character").at(line_len),
        }),
        Err(e) => Err(Error::utf8(CODEC, e.valid_up_to(), e).with_bytes(&bytes[e.valid_up_to()..])),
    };
    buf.advance(total);
    result
}

impl Decoder for Utf8LineCodec {
    type Item = Utf8Line;
    type Error = Error;

    #[inline(always)]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Utf8Line>, Error> {
        self.decode_with(buf, false)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Utf8Line>, Error> {
        match self.decode_with(buf, true)? {
            Some(line) => Ok(Some(line)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len())),
        }
    }
}

/// Writes the line followed by the configured terminator.
///
/// # Errors
///
/// As [`LineCodec`]'s encoder.
impl<T: AsRef<str>> Encoder<T> for Utf8LineCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        self.inner.encode_line(item.as_ref().as_bytes(), dst)
    }
}

impl Utf8LineCodec {
    /// Wraps `inner` after checking that its EOL and terminator are UTF-8.
    pub(super) fn checked(inner: LineCodec) -> Result<Utf8LineCodec, Error> {
        if let Eol::Literal(lit) = &inner.eol
            && std::str::from_utf8(&lit.eol).is_err()
        {
            return Err(
                Error::invalid_input(CODEC, "end of line is not UTF-8").with_bytes(&lit.eol)
            );
        }
        if let Some(t) = inner.terminator.get()
            && std::str::from_utf8(t).is_err()
        {
            return Err(Error::invalid_input(CODEC, "write terminator is not UTF-8").with_bytes(t));
        }
        Ok(Utf8LineCodec { inner })
    }
}
