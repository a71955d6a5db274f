//! Lines: AnyEvent's `line` read type and its write type.
//!
//! A line is everything before the first end of line (EOL); the frame carries
//! the line *and* the EOL that ended it, as the Perl callback gets both. Three
//! kinds of EOL exist:
//!
//! * **default**: `\r?\n`. The LF ends the line; a CR directly before it
//!   belongs to the EOL, a CR anywhere else stays in the line (RT-line-1).
//! * **literal bytes** (`LineCodecBuilder::eol`): the first occurrence,
//!   found across reads however the EOL itself was split (RT-line-2).
//! * **regex** (`LineCodecBuilder::eol_regex`): the shortest prefix followed
//!   by a match, as AE's `^(.*?)(EOL)` (RT-line-3). This one depends on how
//!   the input was split; see [`LineCodecBuilder::eol_regex`].
//!
//! [`LineCodec`] hands out [`Line`]s of [`Bytes`] split off the read buffer;
//! [`Utf8LineCodec`] hands out [`Utf8Line`]s holding one `String`.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;
use regex::bytes::Regex;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;

const CODEC: &str = "line";

/// The default limit on the length of one line (EOL excluded): 1 MiB.
///
/// Text protocols keep lines far shorter (SMTP allows 1000 bytes, HTTP header
/// lines a few KiB) and JSON-lines records seldom pass a few hundred KiB, so
/// 1 MiB lets all of them through, while a peer that never sends an end of
/// line can make one connection buffer at most about 1 MiB.
pub const DEFAULT_LINE_MAX_LENGTH: usize = 1024 * 1024;

/// What the write side appends when no terminator is configured and the EOL
/// is the default `\r?\n`: a bare LF, like AE users' `"\n"`.
const DEFAULT_WRITE_TERMINATOR: &[u8] = b"\n";

/// What a decoder does with a line longer than its `max_length`.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{LineCodec, OverflowPolicy};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineCodec::builder()
///     .max_length(4)
///     .overflow(OverflowPolicy::Discard)
///     .build()?;
/// let mut buf = BytesMut::from(&b"much too long\nok\n"[..]);
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert!(err.is_limit() && !err.is_fatal());
/// assert_eq!(codec.decode(&mut buf)?.unwrap().line(), b"ok");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverflowPolicy {
    /// Report `ENOSPC` as a **fatal** error and consume nothing. The default:
    /// a peer that overruns the limit is out of step with the protocol.
    #[default]
    Fatal,
    /// Report `ENOSPC` **once**, as a non-fatal error, then drop the rest of
    /// the line up to and including its EOL and go on with the next line.
    Discard,
}

/// One decoded line and the end of line that ended it.
///
/// A `Line` is one [`Bytes`] holding the line followed by its end of line,
/// and where the end of line starts. For [`LineCodec`] that `Bytes` is split
/// off the read buffer (no copy), and handing a line out costs one reference
/// count, not two.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::Line;
///
/// let line = Line::new("hello", "\r\n");
/// assert_eq!(line.line(), b"hello");
/// assert_eq!(line.eol(), b"\r\n");
/// assert_eq!(line.as_bytes(), b"hello\r\n");
/// assert_eq!(line.into_line(), "hello");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Line {
    /// The line followed by its end of line.
    frame: Bytes,
    /// Where the end of line starts in `frame`.
    line_len: usize,
}

impl Line {
    /// A line from its two parts, copied into one buffer (O(1) when `eol`
    /// is empty).
    pub fn new(line: impl Into<Bytes>, eol: impl AsRef<[u8]>) -> Line {
        let line = line.into();
        let eol = eol.as_ref();
        let line_len = line.len();
        if eol.is_empty() {
            return Line {
                frame: line,
                line_len,
            };
        }
        let mut frame = BytesMut::with_capacity(line_len + eol.len());
        frame.extend_from_slice(&line);
        frame.extend_from_slice(eol);
        Line {
            frame: frame.freeze(),
            line_len,
        }
    }

    /// A line from a frame holding the line and then its end of line, which
    /// starts at `line_len`. O(1).
    ///
    /// # Panics
    ///
    /// If `line_len` is past the end of `frame`.
    pub fn from_frame(frame: Bytes, line_len: usize) -> Line {
        assert!(
            line_len <= frame.len(),
            "line_len {line_len} past the end of a {}-byte frame",
            frame.len()
        );
        Line { frame, line_len }
    }

    /// The line, without its end of line.
    pub fn line(&self) -> &[u8] {
        &self.frame[..self.line_len]
    }

    /// The end of line that ended it (`"\n"` or `"\r\n"` for the default;
    /// the literal; or the text the EOL regex matched).
    pub fn eol(&self) -> &[u8] {
        &self.frame[self.line_len..]
    }

    /// The line followed by its end of line, as read.
    pub fn as_bytes(&self) -> &[u8] {
        &self.frame
    }

    /// The line as `Bytes` sharing this line's memory (one reference count).
    pub fn line_bytes(&self) -> Bytes {
        self.frame.slice(..self.line_len)
    }

    /// The line, dropping the end of line. O(1), no reference count.
    pub fn into_line(mut self) -> Bytes {
        self.frame.truncate(self.line_len);
        self.frame
    }

    /// The line and its end of line, as read, in one `Bytes`.
    pub fn into_frame(self) -> Bytes {
        self.frame
    }

    /// `(line, eol)`, sharing this line's memory.
    pub fn into_parts(mut self) -> (Bytes, Bytes) {
        let eol = self.frame.split_off(self.line_len);
        (self.frame, eol)
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Bytes`'s Debug: a byte string with escapes.
        f.debug_struct("Line")
            .field("line", &self.frame.slice(..self.line_len))
            .field("eol", &self.frame.slice(self.line_len..))
            .finish()
    }
}

/// One decoded UTF-8 line and its end of line, in a single `String`.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::Utf8Line;
///
/// let line = Utf8Line::new("grüße", "\n");
/// assert_eq!(line.line(), "grüße");
/// assert_eq!(line.eol(), "\n");
/// assert_eq!(line.into_line(), "grüße");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Line {
    /// The line followed by its end of line: one allocation for both.
    text: String,
    /// Where the end of line starts in `text` (always a char boundary).
    line_len: usize,
}

impl Utf8Line {
    /// A line from its two parts (one allocation when `line` has no spare
    /// capacity for `eol`).
    pub fn new(line: impl Into<String>, eol: &str) -> Utf8Line {
        let mut text = line.into();
        let line_len = text.len();
        text.push_str(eol);
        Utf8Line { text, line_len }
    }

    /// The line, without its end of line.
    pub fn line(&self) -> &str {
        self.text.get(..self.line_len).unwrap_or_default()
    }

    /// The end of line that ended it.
    pub fn eol(&self) -> &str {
        self.text.get(self.line_len..).unwrap_or_default()
    }

    /// The line as a `String`, dropping the end of line (no allocation).
    pub fn into_line(mut self) -> String {
        self.text.truncate(self.line_len);
        self.text
    }
}

/// Where a line ends, as configured. Private: the builder is the public face.
#[derive(Debug, Clone)]
enum Eol {
    /// `\r?\n`.
    Default,
    /// A literal byte string (never empty).
    Literal {
        eol: Bytes,
        /// Boxed: a `Finder` is a few hundred bytes, the other variants small.
        finder: Box<memmem::Finder<'static>>,
    },
    /// A regex (never matching the empty string).
    Regex { re: Regex, hold_open: bool },
}

/// The outcome of looking for the end of the first line in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The first line is `buf[..line_len]`, its EOL the next `eol_len` bytes.
    Found { line_len: usize, eol_len: usize },
    /// No verdict yet; `buf[..scanned]` need not be looked at again.
    NeedMore { scanned: usize },
    /// The first line is certainly longer than the limit; `seen` bytes of it
    /// were examined.
    Overflow { seen: usize },
}

impl Eol {
    /// Looks for the end of the first line of `buf`, resuming after
    /// `scanned` bytes examined by an earlier call on the same line.
    ///
    /// The verdict depends only on a bounded prefix of `buf` (the line limit
    /// plus the longest EOL), so the default and literal EOLs decide the same
    /// way however the input was split.
    fn scan(&self, buf: &[u8], scanned: usize, max: usize, eof: bool) -> Scan {
        match self {
            Eol::Default => scan_default(buf, scanned, max),
            Eol::Literal { eol, finder } => scan_literal(finder, eol.len(), buf, scanned, max),
            Eol::Regex { re, hold_open } => {
                scan_regex(re, *hold_open && !eof, buf, scanned, max, eof)
            }
        }
    }

    /// Drops the front of an over-long line. Returns true when its EOL was
    /// found and dropped too; false when more input is needed (then only
    /// bytes that may start the EOL are kept, none at all at `eof`).
    fn discard(&self, buf: &mut BytesMut, max: usize, eof: bool) -> bool {
        match self {
            Eol::Default => match memchr::memchr(b'\n', buf) {
                Some(lf) => {
                    buf.advance(lf + 1);
                    true
                }
                None => {
                    // A CR at the end would belong to the EOL, but the EOL
                    // is dropped with the line anyway.
                    buf.clear();
                    false
                }
            },
            Eol::Literal { eol, finder } => match finder.find(buf) {
                Some(at) => {
                    buf.advance(at + eol.len());
                    true
                }
                None => {
                    let keep = if eof { 0 } else { eol.len() - 1 };
                    buf.advance(buf.len().saturating_sub(keep));
                    false
                }
            },
            Eol::Regex { re, hold_open } => match first_match(re, buf) {
                Some((start, end)) if *hold_open && !eof && end == buf.len() => {
                    // Keep the held match (at most `max` bytes of it, and at
                    // least one, so the regex still sees that a run of EOL
                    // bytes goes on) and drop the rest.
                    let keep = (end - start).min(max.max(1));
                    buf.advance(end - keep);
                    false
                }
                Some((_, end)) => {
                    buf.advance(end);
                    true
                }
                None => {
                    buf.clear();
                    false
                }
            },
        }
    }
}

/// `\r?\n`: the LF must lie within `max + 2` bytes (a line of `max` bytes,
/// then CR LF).
#[inline(always)]
fn scan_default(buf: &[u8], scanned: usize, max: usize) -> Scan {
    let window = buf.len().min(max.saturating_add(2));
    let from = scanned.min(window);
    if let Some(i) = find_lf(&buf[from..window]) {
        let lf = from + i;
        let line_len = if lf > 0 && buf[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        return if line_len > max {
            Scan::Overflow { seen: lf + 1 }
        } else {
            Scan::Found {
                line_len,
                eol_len: lf + 1 - line_len,
            }
        };
    }
    // No LF yet. More than `max` bytes are too many, unless the byte at
    // `max` is a CR that the next byte (not here yet) may join to a CR LF.
    let len = buf.len();
    if len > max && (len - max >= 2 || buf[max] != b'\r') {
        Scan::Overflow { seen: window }
    } else {
        Scan::NeedMore { scanned: window }
    }
}

/// How many bytes `find_lf` examines inline before handing over to `memchr`.
///
/// Most lines are short; for them a word-at-a-time scan in the caller beats
/// `memchr`'s call and CPU-feature dispatch (which cost more than scanning
/// 40 bytes). Past 64 bytes, `memchr`'s vector loop wins.
const INLINE_SCAN: usize = 64;

/// The position of the first LF in `hay`.
#[inline(always)]
fn find_lf(hay: &[u8]) -> Option<usize> {
    let mut at = 0;
    // Two words per step: one well-predicted branch per 16 bytes.
    while at < INLINE_SCAN
        && let Some(pair) = hay[at..].first_chunk::<16>()
    {
        let lo = lf_flags(pair[..8].try_into().expect("8 of 16 bytes"));
        let hi = lf_flags(pair[8..].try_into().expect("8 of 16 bytes"));
        if lo | hi != 0 {
            let i = if lo != 0 {
                lo.trailing_zeros()
            } else {
                64 + hi.trailing_zeros()
            };
            return Some(at + (i / 8) as usize);
        }
        at += 16;
    }
    // A short tail (the last line in the buffer) in one more word.
    if at < INLINE_SCAN
        && let Some(word) = hay[at..].first_chunk::<8>()
    {
        let flags = lf_flags(*word);
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr::memchr(b'\n', &hay[at..]).map(|i| at + i)
}

/// The high bit of each byte of the result is set where `word` (read
/// little-endian) has its first LF, and possibly in bytes after it, never
/// before: a byte of `x` is zero where the word has a LF, and only bytes
/// above a zero byte can be flagged falsely, so the lowest flag is exact.
#[inline(always)]
fn lf_flags(word: [u8; 8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let x = u64::from_le_bytes(word) ^ LFS;
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// A literal EOL of `eol_len` bytes must start at or before `max`. The
/// search resumes `eol_len - 1` bytes before the end of the last one, so an
/// EOL split across reads is found and nothing else is looked at twice.
fn scan_literal(
    finder: &memmem::Finder<'static>,
    eol_len: usize,
    buf: &[u8],
    scanned: usize,
    max: usize,
) -> Scan {
    let reach = max.saturating_add(eol_len);
    let window = buf.len().min(reach);
    let from = scanned.min(window).saturating_sub(eol_len - 1);
    match finder.find(&buf[from..window]) {
        Some(i) => Scan::Found {
            line_len: from + i,
            eol_len,
        },
        None if buf.len() >= reach => Scan::Overflow { seen: window },
        None => Scan::NeedMore { scanned: window },
    }
}

/// The regex EOL, re-run over the buffered line on each call that brings
/// new bytes (as AE does); see `LineCodecBuilder::eol_regex` for the cost.
fn scan_regex(
    re: &Regex,
    hold_open: bool,
    buf: &[u8],
    scanned: usize,
    max: usize,
    eof: bool,
) -> Scan {
    let len = buf.len();
    if !eof && scanned == len {
        // Nothing new since the last fruitless search: same answer.
        return Scan::NeedMore { scanned };
    }
    match first_match(re, buf) {
        Some((start, end)) if start > max || end - start > max => Scan::Overflow { seen: len },
        Some((_, end)) if hold_open && end == len => Scan::NeedMore { scanned: len },
        Some((start, end)) => Scan::Found {
            line_len: start,
            eol_len: end - start,
        },
        None if len > max => Scan::Overflow { seen: len },
        None => Scan::NeedMore { scanned: len },
    }
}

/// The leftmost non-empty match. Empty matches are never an end of line:
/// they would end an empty line without consuming anything.
fn first_match(re: &Regex, hay: &[u8]) -> Option<(usize, usize)> {
    re.find_iter(hay)
        .find(|m| !m.is_empty())
        .map(|m| (m.start(), m.end()))
}

/// Decoder state: reading a line (with how far it was scanned), or dropping
/// an over-long one up to its end of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading { scanned: usize },
    Discarding,
}

/// A decoder and encoder for lines, with frames of [`Bytes`] (no copy).
///
/// The default end of line is `\r?\n`; the builder sets a literal or regex
/// EOL, the length limit and what happens past it. Decoding is linear in the
/// input for the default and literal EOLs: the codec remembers how far it
/// scanned and the line and EOL are split off the buffer without copying.
///
/// # Errors and state
///
/// * A line longer than `max_length` (EOL excluded): `ENOSPC`
///   ([`Error::is_limit`]). With [`OverflowPolicy::Fatal`] (the default)
///   the error is fatal and nothing is consumed. With
///   [`OverflowPolicy::Discard`] it is reported once, non-fatal, and the
///   following `decode` calls drop the line through its EOL.
/// * Input ending inside a line (`decode_eof`): `EPIPE`, fatal; the partial
///   line stays in the buffer and [`Error::seen`] gives its length. While
///   discarding, the end of input simply ends the discarded line.
///
/// The codec keeps a scan position into the buffer between calls, so feed it
/// one buffer and let only it consume from the front.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{Line, LineCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = LineCodec::new();
/// let mut buf = BytesMut::from(&b"a\rb\r\r\n\rd\n"[..]);
/// let line = codec.decode(&mut buf)?.unwrap();
/// assert_eq!((line.line(), line.eol()), (&b"a\rb\r"[..], &b"\r\n"[..]));
/// assert_eq!(codec.decode(&mut buf)?, Some(Line::new("\rd", "\n")));
///
/// let mut out = BytesMut::new();
/// codec.encode("hello", &mut out)?;
/// assert_eq!(out, "hello\n");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodec {
    eol: Eol,
    max_length: usize,
    overflow: OverflowPolicy,
    /// What the encoder appends; `None` for a regex EOL that does not
    /// accept `\n` and was given no terminator.
    terminator: Option<Bytes>,
    state: State,
}

impl LineCodec {
    /// A codec for `\r?\n` lines of at most [`DEFAULT_LINE_MAX_LENGTH`]
    /// bytes, fatal on overflow, writing `\n`.
    pub fn new() -> LineCodec {
        LineCodec {
            eol: Eol::Default,
            max_length: DEFAULT_LINE_MAX_LENGTH,
            overflow: OverflowPolicy::Fatal,
            terminator: Some(Bytes::from_static(DEFAULT_WRITE_TERMINATOR)),
            state: State::Reading { scanned: 0 },
        }
    }

    /// A codec whose end of line is the literal `eol` (written as well).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `eol` is empty: it would end an empty line at once,
    /// forever.
    pub fn with_eol(eol: impl AsRef<[u8]>) -> Result<LineCodec, Error> {
        LineCodec::builder().eol(eol).build()
    }

    /// A builder for every option.
    pub fn builder() -> LineCodecBuilder {
        LineCodecBuilder::new()
    }

    /// The longest line accepted, EOL excluded.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// What happens to a line over [`max_length`](Self::max_length).
    pub fn overflow_policy(&self) -> OverflowPolicy {
        self.overflow
    }

    /// What the encoder appends to each line, if anything is configured.
    pub fn write_terminator(&self) -> Option<&[u8]> {
        self.terminator.as_deref()
    }

    /// True while an over-long line is being dropped
    /// ([`OverflowPolicy::Discard`]).
    pub fn is_discarding(&self) -> bool {
        self.state == State::Discarding
    }

    /// Finds the first complete line at the front of `buf` and returns
    /// `(line_len, eol_len)` without consuming it; drops discarded bytes.
    ///
    /// The common case (default EOL, a whole line buffered) is inlined into
    /// `decode`; everything else goes through `next_line_slow`. Forced
    /// inlining (here and on the rest of the hot path) lets the caller keep
    /// the frame in registers: returned through memory, the 64-byte `Line`
    /// made decoding about twice as slow in the line-40B benchmark.
    #[inline(always)]
    fn next_line(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<(usize, usize)>, Error> {
        if let (State::Reading { scanned }, Eol::Default) = (self.state, &self.eol) {
            match scan_default(buf, scanned, self.max_length) {
                Scan::Found { line_len, eol_len } => {
                    // Usually already 0: a store less per line.
                    if scanned != 0 {
                        self.state = State::Reading { scanned: 0 };
                    }
                    return Ok(Some((line_len, eol_len)));
                }
                Scan::NeedMore { scanned } => {
                    self.state = State::Reading { scanned };
                    return Ok(None);
                }
                Scan::Overflow { .. } => {}
            }
        }
        self.next_line_slow(buf, eof)
    }

    /// `next_line` for every state and EOL kind.
    #[inline(never)]
    fn next_line_slow(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<(usize, usize)>, Error> {
        loop {
            match self.state {
                State::Discarding => {
                    if !self.eol.discard(buf, self.max_length, eof) {
                        return Ok(None);
                    }
                    self.state = State::Reading { scanned: 0 };
                }
                State::Reading { scanned } => {
                    return match self.eol.scan(buf, scanned, self.max_length, eof) {
                        Scan::Found { line_len, eol_len } => {
                            self.state = State::Reading { scanned: 0 };
                            Ok(Some((line_len, eol_len)))
                        }
                        Scan::NeedMore { scanned } => {
                            self.state = State::Reading { scanned };
                            Ok(None)
                        }
                        Scan::Overflow { seen } => Err(self.overflowed(buf, seen)),
                    };
                }
            }
        }
    }

    fn overflowed(&mut self, buf: &[u8], seen: usize) -> Error {
        let err = Error::too_large(CODEC, self.max_length, seen as u64).with_bytes(buf);
        match self.overflow {
            OverflowPolicy::Fatal => err,
            OverflowPolicy::Discard => {
                self.state = State::Discarding;
                err.fatal(false)
            }
        }
    }

    /// Finds up to `max_lines` complete lines at the front of `buf` without
    /// consuming them, appends each one's `(line_end, frame_end)` offsets to
    /// `bounds` and returns how many bytes they cover (0: none yet). Room for
    /// `expect` lines is reserved once a first line is found, so a call that
    /// finds none allocates nothing.
    ///
    /// The lines and errors come in the order `decode` would give them: an
    /// error is returned only for the first line (after the discarding of an
    /// over-long line, which happens at the front). A line that would
    /// overflow later in the buffer ends the batch instead, so the next call
    /// finds it at the front and reports it after the lines before it.
    #[inline(always)]
    pub(crate) fn scan_lines(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        max_lines: usize,
        expect: usize,
        bounds: &mut Vec<(usize, usize)>,
    ) -> Result<usize, Error> {
        // The first line goes through `next_line`: every state and EOL kind,
        // the discarding of an over-long line, its errors.
        let Some((line_len, eol_len)) = self.next_line(buf, eof)? else {
            return Ok(0);
        };
        let mut off = line_len + eol_len;
        bounds.reserve(expect);
        bounds.push((line_len, off));
        // The state is now `Reading` from the start of the next line.
        for _ in 1..max_lines {
            let rest = &buf[off..];
            let scan = match &self.eol {
                Eol::Default => scan_default(rest, 0, self.max_length),
                eol => eol.scan(rest, 0, self.max_length, eof),
            };
            match scan {
                Scan::Found { line_len, eol_len } => {
                    bounds.push((off + line_len, off + line_len + eol_len));
                    off += line_len + eol_len;
                }
                Scan::NeedMore { scanned } => {
                    // Relative to `rest`, which becomes the front once the
                    // batch is split off: nothing is scanned twice.
                    self.state = State::Reading { scanned };
                    break;
                }
                // Reported at the front by the next call, after these lines
                // (a rescan of at most `max_length` and an EOL, once, on the
                // way to an error).
                Scan::Overflow { .. } => break,
            }
        }
        Ok(off)
    }

    /// Splits the line found by `next_line` off the buffer.
    #[inline(always)]
    fn take(buf: &mut BytesMut, line_len: usize, eol_len: usize) -> Line {
        // One split for line and EOL: the frame's only reference count.
        Line {
            frame: buf.split_to(line_len + eol_len).freeze(),
            line_len,
        }
    }

    #[inline(always)]
    fn decode_with(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Line>, Error> {
        match self.next_line(buf, eof)? {
            Some((line_len, eol_len)) => Ok(Some(Self::take(buf, line_len, eol_len))),
            None => Ok(None),
        }
    }

    /// Appends `line` and the terminator, after checking that a decoder
    /// with this configuration would read exactly `line` back.
    fn encode_line(&self, line: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        let Some(term) = &self.terminator else {
            return Err(Error::invalid_input(
                CODEC,
                "no write terminator for this end-of-line regex",
            ));
        };
        if line.len() > self.max_length {
            return Err(Error::invalid_input(CODEC, "line longer than max_length")
                .with_limit(self.max_length)
                .with_seen(line.len() as u64));
        }
        let start = dst.len();
        dst.reserve(line.len() + term.len());
        dst.extend_from_slice(line);
        dst.extend_from_slice(term);
        let expect = Scan::Found {
            line_len: line.len(),
            eol_len: term.len(),
        };
        // Scanned with our own limit: for a regex EOL the match counts
        // against it too, and what we write must be what we would read.
        match self.eol.scan(&dst[start..], 0, self.max_length, true) {
            found if found == expect => Ok(()),
            Scan::Overflow { .. } => {
                dst.truncate(start);
                Err(Error::invalid_input(
                    CODEC,
                    "terminator longer than max_length allows an end of line",
                )
                .with_limit(self.max_length)
                .with_seen(term.len() as u64))
            }
            _ => {
                dst.truncate(start);
                Err(
                    Error::invalid_input(CODEC, "line contains or runs into an end of line")
                        .with_bytes(line),
                )
            }
        }
    }
}

impl Default for LineCodec {
    fn default() -> LineCodec {
        LineCodec::new()
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = Error;

    #[inline(always)]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
        self.decode_with(buf, false)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
        match self.decode_with(buf, true)? {
            Some(line) => Ok(Some(line)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len())),
        }
    }
}

/// Writes `line` followed by the configured terminator.
///
/// # Errors
///
/// `EINVAL`, with nothing written, when no terminator is configured (regex
/// EOL that does not accept `\n`), when `line` is longer than
/// `max_length`, or when the decoder would not read `line` back unchanged:
/// it contains the end of line, or its tail joins the terminator (a trailing
/// CR before the default `\n`).
impl<T: AsRef<[u8]>> Encoder<T> for LineCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_line(item.as_ref(), dst)
    }
}

/// The configured end of line, before it is compiled.
#[derive(Debug, Clone)]
enum EolSpec {
    Default,
    Literal(Bytes),
    Regex(Regex),
}

/// Configures a [`LineCodec`] or [`Utf8LineCodec`].
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{Line, LineCodec, OverflowPolicy};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineCodec::builder()
///     .eol("\r\n")
///     .max_length(1000)
///     .overflow(OverflowPolicy::Discard)
///     .build()?;
/// let mut buf = BytesMut::from(&b"x\ny\r\n"[..]);
/// assert_eq!(codec.decode(&mut buf)?, Some(Line::new("x\ny", "\r\n")));
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodecBuilder {
    eol: EolSpec,
    hold_open: bool,
    max_length: usize,
    overflow: OverflowPolicy,
    terminator: Option<Bytes>,
}

impl LineCodecBuilder {
    /// The defaults of [`LineCodec::new`].
    pub fn new() -> LineCodecBuilder {
        LineCodecBuilder {
            eol: EolSpec::Default,
            hold_open: false,
            max_length: DEFAULT_LINE_MAX_LENGTH,
            overflow: OverflowPolicy::Fatal,
            terminator: None,
        }
    }

    /// The default end of line, `\r?\n`.
    pub fn default_eol(&mut self) -> &mut Self {
        self.eol = EolSpec::Default;
        self
    }

    /// A literal end of line: the line ends at its first occurrence, also
    /// when the EOL arrives split across reads. Regex metacharacters have
    /// no meaning here. Must not be empty ([`build`](Self::build) refuses).
    pub fn eol(&mut self, eol: impl AsRef<[u8]>) -> &mut Self {
        self.eol = EolSpec::Literal(Bytes::copy_from_slice(eol.as_ref()));
        self
    }

    /// A regex end of line (`regex::bytes::Regex`): the line is the shortest
    /// prefix of the buffered bytes followed by a non-empty match, the EOL is
    /// the matched text, as AE's `^(.*?)(EOL)` (RT-line-3). A regex that
    /// matches the empty string is refused by [`build`](Self::build); empty
    /// matches of other regexes (`\b`) are skipped.
    ///
    /// **Split-dependent** (docs/semantics.md §2a): the regex only sees what has arrived.
    /// With `[;,]+`, `"a;"` then `";b"` gives the line `"a"` with EOL `";"`
    /// and then an empty line with EOL `";"`, while `"a;;b"` in one read
    /// gives `"a"` with `";;"`. [`hold_open_match`](Self::hold_open_match)
    /// fixes the common cases.
    ///
    /// **Cost**: each `decode` call that brings new bytes re-runs the regex
    /// over the buffered part of the current line (AE does the same), so a
    /// line arriving in `k` pieces costs `O(k × length)`; `max_length`
    /// bounds it.
    ///
    /// **Limit**: with a regex EOL, a line is over the limit when the line
    /// *or the matched EOL* is longer than `max_length` (regex matches have
    /// no length of their own), decided on what has arrived.
    pub fn eol_regex(&mut self, eol: Regex) -> &mut Self {
        self.eol = EolSpec::Regex(eol);
        self
    }

    /// For a regex EOL: do not take a match that touches the end of the
    /// buffered bytes until more bytes (or the end of input) show whether it
    /// goes on. This makes EOLs such as `[;,]+` and `\r\n|\n|\r` (whose
    /// matches are decided by the next byte) split-invariant; it cannot do
    /// so for every regex. (An EOL match longer than `max_length` is an
    /// overflow, see [`eol_regex`](Self::eol_regex), so a flood of EOL bytes
    /// cannot grow the buffer without end.)
    ///
    /// Off by default (AE's behaviour). No effect on default and literal
    /// EOLs, which are split-invariant anyway.
    pub fn hold_open_match(&mut self, on: bool) -> &mut Self {
        self.hold_open = on;
        self
    }

    /// The longest line accepted, EOL excluded (and, for a regex EOL, the
    /// longest EOL match) (default
    /// [`DEFAULT_LINE_MAX_LENGTH`]). `usize::MAX` means no limit: a peer
    /// that never sends an EOL then grows the buffer without bound.
    pub fn max_length(&mut self, max: usize) -> &mut Self {
        self.max_length = max;
        self
    }

    /// What happens to a line over the limit (default
    /// [`OverflowPolicy::Fatal`]).
    pub fn overflow(&mut self, policy: OverflowPolicy) -> &mut Self {
        self.overflow = policy;
        self
    }

    /// What the encoder appends to each line. Defaults: `\n` for the default
    /// EOL, the literal for a literal EOL, `\n` for a regex EOL that accepts
    /// it (else the encoder refuses until one is set).
    pub fn write_terminator(&mut self, terminator: impl AsRef<[u8]>) -> &mut Self {
        self.terminator = Some(Bytes::copy_from_slice(terminator.as_ref()));
        self
    }

    /// Builds a [`LineCodec`].
    ///
    /// # Errors
    ///
    /// `EINVAL` when the EOL can match empty input (an empty literal, or a
    /// regex matching `""`): as a stream decoder it would yield empty lines
    /// forever. `EINVAL` when the write terminator is not read back as one
    /// whole end of line by this configuration.
    pub fn build(&self) -> Result<LineCodec, Error> {
        let eol = match &self.eol {
            EolSpec::Default => Eol::Default,
            EolSpec::Literal(eol) if eol.is_empty() => {
                return Err(Error::invalid_input(
                    CODEC,
                    "empty end of line would match at once, forever",
                ));
            }
            EolSpec::Literal(eol) => Eol::Literal {
                finder: Box::new(memmem::Finder::new(eol.as_ref()).into_owned()),
                eol: eol.clone(),
            },
            EolSpec::Regex(re) if re.is_match(b"") => {
                return Err(Error::invalid_input(
                    CODEC,
                    "end-of-line regex matches the empty string",
                ));
            }
            EolSpec::Regex(re) => Eol::Regex {
                re: re.clone(),
                hold_open: self.hold_open,
            },
        };
        let is_whole_eol = |t: &[u8]| {
            eol.scan(t, 0, usize::MAX, true)
                == Scan::Found {
                    line_len: 0,
                    eol_len: t.len(),
                }
        };
        let terminator = match (&self.terminator, &eol) {
            (Some(t), _) if !t.is_empty() && is_whole_eol(t) => Some(t.clone()),
            (Some(t), _) => {
                return Err(Error::invalid_input(
                    CODEC,
                    "write terminator is not an end of line for this codec",
                )
                .with_bytes(t));
            }
            (None, Eol::Default) => Some(Bytes::from_static(DEFAULT_WRITE_TERMINATOR)),
            (None, Eol::Literal { eol, .. }) => Some(eol.clone()),
            (None, Eol::Regex { .. }) => {
                Some(Bytes::from_static(DEFAULT_WRITE_TERMINATOR)).filter(|t| is_whole_eol(t))
            }
        };
        Ok(LineCodec {
            eol,
            max_length: self.max_length,
            overflow: self.overflow,
            terminator,
            state: State::Reading { scanned: 0 },
        })
    }

    /// Builds a [`Utf8LineCodec`].
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and `EINVAL` when the literal EOL or the
    /// write terminator is not valid UTF-8.
    pub fn build_utf8(&self) -> Result<Utf8LineCodec, Error> {
        let inner = self.build()?;
        if let Eol::Literal { eol, .. } = &inner.eol
            && std::str::from_utf8(eol).is_err()
        {
            return Err(Error::invalid_input(CODEC, "end of line is not UTF-8").with_bytes(eol));
        }
        if let Some(t) = &inner.terminator
            && std::str::from_utf8(t).is_err()
        {
            return Err(Error::invalid_input(CODEC, "write terminator is not UTF-8").with_bytes(t));
        }
        Ok(Utf8LineCodec { inner })
    }
}

impl Default for LineCodecBuilder {
    fn default() -> LineCodecBuilder {
        LineCodecBuilder::new()
    }
}

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
    /// As [`LineCodec::new`]: `\r?\n`, [`DEFAULT_LINE_MAX_LENGTH`], fatal
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
        match self.inner.next_line(buf, eof)? {
            Some((line_len, eol_len)) => utf8_line(buf, line_len, eol_len).map(Some),
            None => Ok(None),
        }
    }
}

/// Copies the line and its EOL into one `String` and consumes them, also
/// when they are not UTF-8.
#[inline]
fn utf8_line(buf: &mut BytesMut, line_len: usize, eol_len: usize) -> Result<Utf8Line, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(eol: &[u8]) -> Eol {
        Eol::Literal {
            eol: Bytes::copy_from_slice(eol),
            finder: Box::new(memmem::Finder::new(eol).into_owned()),
        }
    }

    #[test]
    fn default_scan_waits_for_lf_after_cr_at_the_limit() {
        // max 3: "abc\r" may still become "abc" + CRLF.
        assert_eq!(scan_default(b"abc\r", 0, 3), Scan::NeedMore { scanned: 4 });
        assert_eq!(
            scan_default(b"abc\r\n", 4, 3),
            Scan::Found {
                line_len: 3,
                eol_len: 2
            }
        );
        assert_eq!(scan_default(b"abc\rx", 4, 3), Scan::Overflow { seen: 5 });
        assert_eq!(scan_default(b"abcd", 0, 3), Scan::Overflow { seen: 4 });
        assert_eq!(scan_default(b"abcd\n", 0, 3), Scan::Overflow { seen: 5 });
    }

    #[test]
    fn find_lf_agrees_with_memchr() {
        let mut hay = vec![b'x'; 200];
        assert_eq!(find_lf(&hay), None);
        for at in [0, 1, 7, 8, 9, 63, 64, 65, 150, 199] {
            hay[at] = b'\n';
            assert_eq!(find_lf(&hay), Some(at), "{at}");
            // A later LF, and bytes that differ from LF in one bit, do not
            // move the answer.
            for b in hay.iter_mut().skip(at + 1) {
                *b = [0x0b, 0x8a, 0x00, b'\n'][*b as usize % 4];
            }
            assert_eq!(find_lf(&hay), Some(at));
            hay.fill(b'x');
        }
        for len in 0..20 {
            let mut short = vec![0x0bu8; len];
            assert_eq!(find_lf(&short), None);
            if len > 0 {
                short[len - 1] = b'\n';
                assert_eq!(find_lf(&short), Some(len - 1));
            }
        }
    }

    #[test]
    fn default_scan_handles_the_unbounded_limit() {
        assert_eq!(
            scan_default(b"ab\n", 0, usize::MAX),
            Scan::Found {
                line_len: 2,
                eol_len: 1
            }
        );
        assert_eq!(
            scan_default(b"ab", 1, usize::MAX),
            Scan::NeedMore { scanned: 2 }
        );
    }

    #[test]
    fn literal_scan_resumes_before_the_last_scan_end() {
        let eol = lit(b"<END>");
        let Eol::Literal { finder, .. } = &eol else {
            unreachable!()
        };
        let s = scan_literal(finder, 5, b"abc<EN", 0, 100);
        assert_eq!(s, Scan::NeedMore { scanned: 6 });
        assert_eq!(
            scan_literal(finder, 5, b"abc<END>", 6, 100),
            Scan::Found {
                line_len: 3,
                eol_len: 5
            }
        );
    }

    #[test]
    fn literal_discard_keeps_a_possible_eol_start() {
        let eol = lit(b"\r\n");
        let mut buf = BytesMut::from(&b"xxxx\r"[..]);
        assert!(!eol.discard(&mut buf, 10, false));
        assert_eq!(buf, "\r");
        buf.extend_from_slice(b"\nnext");
        assert!(eol.discard(&mut buf, 10, false));
        assert_eq!(buf, "next");
    }

    #[test]
    fn regex_scan_skips_empty_matches() {
        let re = Regex::new(r"\b").unwrap();
        assert_eq!(first_match(&re, b"ab cd"), None);
        let re = Regex::new(r"\b;").unwrap();
        assert_eq!(first_match(&re, b"ab;"), Some((2, 3)));
    }
}
