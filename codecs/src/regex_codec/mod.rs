//! Regex-delimited records: AnyEvent's `regex` read type.
//!
//! AE's order, kept exactly (RT-regex): on every arrival of data,
//!
//! 1. **accept**: if it matches anywhere in the unscanned window, the frame
//!    is the skipped bytes followed by the window up to the end of the match;
//! 2. else **reject**: if it matches the window, a non-fatal `EBADMSG`,
//!    nothing consumed, and the codec keeps nothing of this scan: the
//!    caller may skip or clear bytes and call again (RT-regex-3);
//! 3. else **skip**: if it matches the window, the window starts after the
//!    end of its match from now on. The skipped bytes stay in the buffer
//!    and in the frame.
//!
//! There is no regex write type; write with [`RawCodec`](crate::RawCodec).

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use tokio_util::codec::Decoder;

use crate::error::Error;

mod search;
pub(crate) use search::{Prior, Search};

const CODEC: &str = "regex";

/// The default limit on one record (skipped bytes included) when every
/// configured regex has matches of bounded length: 1 MiB, as
/// [`DEFAULT_LINE_MAX_LENGTH`](crate::DEFAULT_LINE_MAX_LENGTH).
///
/// Such regexes are searched again only near the end of the last search
/// (see [`RegexCodec`], *Cost*), so the limit bounds the memory, not the
/// work. Peers of AnyEvent send regex-framed records of over 100 KB.
pub const DEFAULT_REGEX_MAX_LENGTH: usize = 1024 * 1024;

/// The default limit on one record (skipped bytes included) when some
/// configured regex has matches of unbounded length (`a+`, `.*`): 64 KiB.
///
/// Such a regex is run again over the whole window on every arrival of data
/// (AE does the same), so this limit bounds the work per read as well as
/// the memory. 64 KiB is the largest HTTP header block common servers
/// accept.
pub const DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH: usize = 64 * 1024;

/// What the last fruitless scan saw: a call without new bytes gives the
/// same answer without running the regexes, and one with new bytes resumes
/// each search near where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    /// The buffer length at that scan.
    len: usize,
    /// Where the window started (the skipped byte count).
    from: usize,
    /// The window's length.
    window_len: usize,
    /// Where the skip regex matched in the window, if it did (without
    /// moving the window: an empty match at its start).
    skip_at: Option<usize>,
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
/// # Split-dependence
///
/// ([§2a](https://docs.rs/anyframe/latest/anyframe/semantics/index.html#2a-which-decoders-are-split-invariant).) As in AE, the regexes only see what has arrived, so frames can depend on
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
///   rejected when the bad bytes arrive before its end (RT-regex-2);
/// * the regexes never look past `max_length` bytes, as if the input were
///   split there: `$` or `\b` can match at that point (`abc\b` with a
///   limit of 3 takes `abc` from `abcd`), and a shorter alternative can
///   win over a longer match that would end past it.
///
/// Use a line or length-prefixed codec where split-invariance matters.
///
/// # Bytes, not characters: `(?-u)`
///
/// The regexes are `regex::bytes::Regex`, with Unicode on by default: `.`,
/// `[^\n]` and `\w` then match whole UTF-8 characters and never a byte
/// that is not UTF-8, so a skip regex such as `^[^\n]*` stops at the first
/// such byte. Perl's regexes on byte strings match bytes; write `(?-u)` at
/// the start of the pattern (`(?-u)^[^\n]*`) or build the regex with
/// `RegexBuilder::unicode(false)` for the same meaning.
///
/// # Cost
///
/// Each call that brings new bytes runs accept (and reject and skip after
/// a miss) again, as AE does, but a regex whose matches have a bounded
/// length `L` resumes `L` (plus 4 bytes of look-around) before where its
/// last search stopped, with the same result as a search of the whole
/// window: a record costs time linear in its length however it is split.
/// A regex with unbounded matches (`a+`, `.*`) searches the whole window
/// each time, so a record arriving in `k` pieces costs `O(k × window)`;
/// the window never exceeds `max_length`, whose default is lower for such
/// regexes ([`DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH`]). When skip moves the
/// window's start, a regex with a longest match still resumes: only the
/// first bytes after the new start, where an anchor or a word boundary
/// now reads differently, are searched again. A call without new bytes
/// runs nothing.
///
/// Building a codec reads its patterns up to eight times (to know their
/// longest matches whatever builder options made them): tens to hundreds
/// of microseconds for patterns with Unicode classes. Build one codec per
/// pattern and clone it for each read.
///
/// # Errors and state
///
/// * reject matched: `EBADMSG`, **non-fatal**, nothing consumed; the same
///   error comes back while the bytes reject matched are there
///   (RT-regex-3). [`Error::offset`] is where reject matched in the buffer.
///   After any error the codec keeps no state about the buffer, so the
///   caller may skip or clear bytes and call again.
/// * More than `max_length` bytes buffered without an accept match within
///   the first `max_length`: `ENOSPC`, fatal, nothing consumed.
/// * End of input without an accept match (`decode_eof`, which searches
///   once more a window that skip moved, RT-regex-5): `EPIPE`, fatal;
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
    accept: Search,
    reject: Option<Search>,
    skip: Option<Search>,
    max_length: usize,
    /// Bytes at the front of the buffer that skip moved out of the window.
    skipped: usize,
    /// The last fruitless scan, if nothing was consumed since.
    scanned: Option<Scanned>,
    /// Single-use (`build_once`): `Some(done)`.
    once: Option<bool>,
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
            accept: Search::new(accept),
            reject: None,
            skip: None,
            max_length: None,
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
        self.decode_with(buf, false)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode_with(buf, true)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len())),
        }
    }
}

impl RegexCodec {
    fn decode_with(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Bytes>, Error> {
        let found = self.scan(buf, eof);
        if found.is_err() {
            // The caller may now skip bytes (RT-regex-3): nothing scanned
            // so far is known to be still in place.
            self.skipped = 0;
            self.scanned = None;
        }
        found
    }

    /// One decode step: accept, then reject and skip, each resuming where
    /// its last search over the same bytes left off. At end of input
    /// (`eof`), a window that skip moved since the last search is searched
    /// once more, as AE runs the request once more on its buffer.
    fn scan(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Bytes>, Error> {
        if self.once == Some(true) {
            return Err(Error::invalid_input(
                CODEC,
                "single-use decoder has already produced its record",
            ));
        }
        let len = buf.len();
        if self.skipped > len || self.scanned.is_some_and(|last| last.len > len) {
            // Someone else consumed from this buffer: start over.
            self.skipped = 0;
            self.scanned = None;
        }
        if let Some(last) = self.scanned
            && last.len == len
            && !(eof && self.skipped != last.from)
        {
            // Nothing new since a search that found no record (a reject
            // is never cached: the state is dropped with the error).
            return Ok(None);
        }
        let window_end = len.min(self.max_length);
        let from = self.skipped.min(window_end);
        let window = &buf[from..window_end];
        // The last search, over this window or one that started before it
        // (skip moved it): each regex resumes where it can without changing
        // its answer.
        let last = self.scanned.filter(|last| last.from <= from);
        let prior = |found: Option<usize>| {
            last.map(|last| Prior {
                moved: from - last.from,
                len: last.window_len,
                found: found.unwrap_or(last.window_len),
            })
        };

        // 1. accept. A match that would give an empty frame is passed over
        //    (it would consume nothing, forever); the last search found no
        //    other.
        let accepted = match self.accept.first_after(window, prior(None)) {
            // A single-use decoder takes it: AE completes such a request.
            Some((0, 0)) if from == 0 && self.once.is_none() => (!window.is_empty())
                .then(|| self.accept.first(window, 1))
                .flatten(),
            found => found,
        };
        if let Some((_, end)) = accepted {
            self.skipped = 0;
            self.scanned = None;
            if let Some(done) = &mut self.once {
                *done = true;
            }
            return Ok(Some(buf.split_to(from + end).freeze()));
        }
        if len > self.max_length {
            return Err(Error::too_large(CODEC, self.max_length, len as u64).with_bytes(buf));
        }
        // 2. reject: the error, and the state goes with it (see `decode`).
        if let Some((at, _)) = self
            .reject
            .as_ref()
            .and_then(|r| r.first_after(window, prior(None)))
        {
            return Err(RegexCodec::reject_error(buf, from + at));
        }
        // 3. skip.
        let mut skip_at = None;
        if let Some((start, end)) = self
            .skip
            .as_ref()
            .and_then(|s| s.first_after(window, prior(last.and_then(|l| l.skip_at))))
        {
            self.skipped = from + end;
            skip_at = Some(start);
        }
        self.scanned = Some(Scanned {
            len,
            from,
            window_len: window.len(),
            skip_at,
        });
        Ok(None)
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
    accept: Search,
    reject: Option<Search>,
    skip: Option<Search>,
    /// `None`: the default for the regexes configured.
    max_length: Option<usize>,
}

impl RegexCodecBuilder {
    /// The reject regex, tried when accept did not match.
    pub fn reject(&mut self, reject: Regex) -> &mut Self {
        self.reject = Some(Search::new(reject));
        self
    }

    /// The skip regex, tried after a miss of accept: the window then starts
    /// after the end of its match.
    pub fn skip(&mut self, skip: Regex) -> &mut Self {
        self.skip = Some(Search::new(skip));
        self
    }

    /// The longest record, skipped bytes included, and the largest window
    /// the regexes see. The default is [`DEFAULT_REGEX_MAX_LENGTH`] when
    /// every configured regex has matches of bounded length, else
    /// [`DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH`] (see [`RegexCodec`], *Cost*).
    pub fn max_length(&mut self, max: usize) -> &mut Self {
        self.max_length = Some(max);
        self
    }

    /// Builds the codec.
    ///
    /// # Errors
    ///
    /// `EINVAL` when accept can match empty text (the empty string, as
    /// `x*`, or only between certain bytes, as `\b`): AE completes such a
    /// request with an empty record (RT-regex-4), and as a stream decoder it
    /// would do so forever; [`build_once`](Self::build_once) accepts it for
    /// one record.
    pub fn build(&self) -> Result<RegexCodec, Error> {
        if self.accept.may_match_empty() {
            return Err(Error::invalid_input(
                CODEC,
                "accept regex can match empty text",
            ));
        }
        Ok(self.build_with(None))
    }

    /// Builds a single-use codec: it decodes one record, as one AnyEvent
    /// `regex` read request does, and then refuses to decode more.
    ///
    /// Unlike [`build`](Self::build) it accepts an accept regex that matches
    /// the empty string, as AnyEvent does: the record then ends at the
    /// leftmost accept match even when that is empty, so with `x*` an empty
    /// buffer gives an empty record at once and `"xxa"` gives `"xx"`.
    ///
    /// # Errors
    ///
    /// None today; `Result` for symmetry with [`build`](Self::build). The
    /// decoder's second record is a non-fatal `EINVAL` with nothing consumed.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe_codecs::RegexCodec;
    /// use bytes::BytesMut;
    /// use regex::bytes::Regex;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut once = RegexCodec::builder(Regex::new("x*").unwrap()).build_once()?;
    /// let mut buf = BytesMut::new();
    /// assert_eq!(once.decode(&mut buf)?.unwrap(), "");
    /// assert!(once.decode(&mut buf).is_err());
    /// # Ok::<(), anyframe_codecs::Error>(())
    /// ```
    pub fn build_once(&self) -> Result<RegexCodec, Error> {
        Ok(self.build_with(Some(false)))
    }

    fn build_with(&self, once: Option<bool>) -> RegexCodec {
        RegexCodec {
            accept: self.accept.clone(),
            reject: self.reject.clone(),
            skip: self.skip.clone(),
            max_length: self.max_length.unwrap_or_else(|| self.default_max_length()),
            skipped: 0,
            scanned: None,
            once,
        }
    }

    /// The default limit for the regexes configured.
    fn default_max_length(&self) -> usize {
        let bounded = [Some(&self.accept), self.reject.as_ref(), self.skip.as_ref()]
            .into_iter()
            .flatten()
            .all(|s| s.max_len().is_some());
        if bounded {
            DEFAULT_REGEX_MAX_LENGTH
        } else {
            DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH
        }
    }
}
