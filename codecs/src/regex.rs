//! Regex-delimited records: AnyEvent's `regex` read type.
//!
//! AE's order, kept exactly (RT-regex): on every arrival of data,
//!
//! 1. **accept**: if it matches anywhere in the unscanned window, the frame
//!    is the skipped bytes followed by the window up to the end of the match;
//! 2. else **reject**: if it matches the window, a non-fatal `EBADMSG`,
//!    nothing consumed;
//! 3. then (whether or not reject matched) **skip**: if it matches the
//!    window, the window starts after the end of its match from now on. The
//!    skipped bytes stay in the buffer and in the frame.
//!
//! There is no regex write type; write with [`RawCodec`](crate::RawCodec).

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use tokio_util::codec::Decoder;

use crate::error::Error;

const CODEC: &str = "regex";

/// The default limit on one record (skipped bytes included): 64 KiB.
///
/// The accept, reject and skip regexes are re-run over the buffered window
/// on every arrival of data (AE's semantics), so this limit bounds the work
/// per read as well as the memory. Regex-framed records are protocol heads
/// (HTTP, SMTP replies, prompts); 64 KiB is the largest HTTP header block
/// common servers accept.
pub const DEFAULT_REGEX_MAX_LENGTH: usize = 64 * 1024;

/// What the last fruitless scan saw, so a call without new bytes gives the
/// same answer without running the regexes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    /// The buffer length at that scan.
    len: usize,
    /// Where the reject regex matched, if it did.
    rejected_at: Option<usize>,
}

/// A decoder for records delimited by regular expressions (`regex::bytes`).
///
/// The frame is a [`Bytes`] split off the buffer without copying:
/// `buf[..skipped + end of the accept match]`, i.e. the skipped bytes, the
/// bytes before the match and the match itself (AE passes exactly this).
/// Skipped bytes are never removed from the buffer before the frame is
/// complete; the codec only remembers how many there are, so dropping the
/// codec mid-record (a cancelled read) loses nothing.
///
/// # Split-dependence (docs/semantics.md §2a)
///
/// As in AE, the regexes only see what has arrived, so frames can depend on
/// how the input was split:
///
/// * an accept match found in a short buffer can differ from the leftmost
///   one in a longer buffer (`a|ab` on `"a"` then `"b"`);
/// * accept never looks into the skipped part, so a match straddling the
///   skip boundary is missed (RT-regex-1: skip `^.*` and accept `END` on
///   `"xxEN"` then `"D…"` runs past the first `END`). Write skip patterns
///   that cannot swallow the start of an accept match;
/// * reject is tried only when accept fails, so a complete record that
///   contains rejected bytes is accepted when it arrives in one piece and
///   rejected when the bad bytes arrive before its end (RT-regex-2).
///
/// Use a line or length-prefixed codec where split-invariance matters.
///
/// # Cost
///
/// Each call that brings new bytes runs accept (and reject and skip after
/// a miss) over the window, as AE does: a record arriving in `k` pieces
/// costs `O(k × window)`. The window never exceeds `max_length`, skip
/// shrinks it, and a call without new bytes runs nothing.
///
/// # Errors and state
///
/// * reject matched: `EBADMSG`, **non-fatal**, nothing consumed; the same
///   error comes back until new bytes arrive and are scanned again
///   (RT-regex-3). [`Error::offset`] is where reject matched in the buffer.
/// * More than `max_length` bytes buffered without an accept match within
///   the first `max_length`: `ENOSPC`, fatal, nothing consumed.
/// * End of input without an accept match (`decode_eof`): `EPIPE`, fatal;
///   everything, skipped bytes included, is still in the buffer.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::RegexCodec;
/// use bytes::BytesMut;
/// use regex::bytes::Regex;
/// use tokio_util::codec::Decoder;
///
/// // An HTTP-like head: up to the blank line, refusing NUL bytes.
/// let mut codec = RegexCodec::builder(Regex::new(r"\r\n\r\n").unwrap())
///     .reject(Regex::new(r"\x00").unwrap())
///     .max_length(8 * 1024)
///     .build()?;
/// let mut buf = BytesMut::from(&b"GET / HTTP/1.0\r\n\r\nbody"[..]);
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "GET / HTTP/1.0\r\n\r\n");
/// assert_eq!(buf, "body");
///
/// let mut buf = BytesMut::from(&b"GET \x00"[..]);
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert!(!err.is_fatal());
/// assert_eq!(buf.len(), 5);
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RegexCodec {
    accept: Regex,
    reject: Option<Regex>,
    skip: Option<Regex>,
    max_length: usize,
    /// Bytes at the front of the buffer that skip moved out of the window.
    skipped: usize,
    /// The last fruitless scan, if nothing was consumed since.
    scanned: Option<Scanned>,
}

impl RegexCodec {
    /// A codec with only an accept regex and the default limit.
    ///
    /// # Errors
    ///
    /// As [`RegexCodecBuilder::build`].
    pub fn new(accept: Regex) -> Result<RegexCodec, Error> {
        RegexCodec::builder(accept).build()
    }

    /// A builder for a codec with the given accept regex.
    pub fn builder(accept: Regex) -> RegexCodecBuilder {
        RegexCodecBuilder {
            accept,
            reject: None,
            skip: None,
            max_length: DEFAULT_REGEX_MAX_LENGTH,
        }
    }

    /// The longest record accepted, skipped bytes included; also the
    /// largest window the regexes see.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// How many bytes at the front of the buffer skip has moved past for
    /// the record in progress.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn reject_error(buf: &[u8], at: usize) -> Error {
        Error::bad_message(CODEC, "input matched the reject regex")
            .at(at)
            .with_bytes(buf.get(at..).unwrap_or_default())
    }
}

impl Decoder for RegexCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let len = buf.len();
        if self.skipped > len {
            // Someone else consumed from this buffer: start over.
            self.skipped = 0;
            self.scanned = None;
        }
        if let Some(last) = self.scanned
            && last.len == len
        {
            return match last.rejected_at {
                Some(at) => Err(RegexCodec::reject_error(buf, at)),
                None => Ok(None),
            };
        }
        let window_end = len.min(self.max_length);
        let from = self.skipped.min(window_end);
        let window = &buf[from..window_end];

        // 1. accept (a match giving an empty frame is ignored: it would
        //    consume nothing, forever).
        if let Some(end) = self
            .accept
            .find_iter(window)
            .map(|m| from + m.end())
            .find(|&end| end > 0)
        {
            self.skipped = 0;
            self.scanned = None;
            return Ok(Some(buf.split_to(end).freeze()));
        }
        if len > self.max_length {
            return Err(Error::too_large(CODEC, self.max_length, len as u64).with_bytes(buf));
        }
        // 2. reject, 3. skip: both look at the same window.
        let rejected_at = self
            .reject
            .as_ref()
            .and_then(|r| r.find(window))
            .map(|m| from + m.start());
        if let Some(m) = self.skip.as_ref().and_then(|s| s.find(window)) {
            self.skipped = from + m.end();
        }
        self.scanned = Some(Scanned { len, rejected_at });
        match rejected_at {
            Some(at) => Err(RegexCodec::reject_error(buf, at)),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len())),
        }
    }
}

/// Configures a [`RegexCodec`].
///
/// # Examples
///
/// ```
/// use anyframe_codecs::RegexCodec;
/// use bytes::BytesMut;
/// use regex::bytes::Regex;
/// use tokio_util::codec::Decoder;
///
/// // Records end with ";"; skip moves past complete "#…\n" comments so
/// // accept does not look at them again (they stay in the record).
/// let mut codec = RegexCodec::builder(Regex::new(";").unwrap())
///     .skip(Regex::new(r"^(?:#[^\n]*\n)+").unwrap())
///     .build()?;
/// let mut buf = BytesMut::from(&b"#x\n"[..]);
/// assert_eq!(codec.decode(&mut buf)?, None);
/// assert_eq!(codec.skipped(), 3);
/// buf.extend_from_slice(b"a;");
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "#x\na;");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RegexCodecBuilder {
    accept: Regex,
    reject: Option<Regex>,
    skip: Option<Regex>,
    max_length: usize,
}

impl RegexCodecBuilder {
    /// The reject regex, tried when accept did not match.
    pub fn reject(&mut self, reject: Regex) -> &mut Self {
        self.reject = Some(reject);
        self
    }

    /// The skip regex, tried after a miss of accept: the window then starts
    /// after the end of its match.
    pub fn skip(&mut self, skip: Regex) -> &mut Self {
        self.skip = Some(skip);
        self
    }

    /// The longest record, skipped bytes included, and the largest window
    /// the regexes see (default [`DEFAULT_REGEX_MAX_LENGTH`]).
    pub fn max_length(&mut self, max: usize) -> &mut Self {
        self.max_length = max;
        self
    }

    /// Builds the codec.
    ///
    /// # Errors
    ///
    /// `EINVAL` when accept matches the empty string: AE completes such a
    /// request at once with an empty record (RT-regex-4), and as a stream
    /// decoder it would do so forever. (A one-shot empty read is
    /// `ChunkCodec::new(0)`.)
    pub fn build(&self) -> Result<RegexCodec, Error> {
        if self.accept.is_match(b"") {
            return Err(Error::invalid_input(
                CODEC,
                "accept regex matches the empty string",
            ));
        }
        Ok(RegexCodec {
            accept: self.accept.clone(),
            reject: self.reject.clone(),
            skip: self.skip.clone(),
            max_length: self.max_length,
            skipped: 0,
            scanned: None,
        })
    }
}
